// loom: one include for the whole public API (DESIGN.md "Contract sketch").
#pragma once

#include "autograd/grad_mode.h"
#include "kernels/cpu/parallel.h"
#include "nn/nn.h"
#include "tensor/autocast.h"
#include "tensor/defaults.h"
#include "tensor/factories.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/tensor.h"
