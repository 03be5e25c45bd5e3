// Everything of nn/ in one include.
#pragma once

#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/embedding.h"
#include "nn/functional.h"
#include "nn/gpt.h"
#include "nn/init.h"
#include "nn/layer_norm.h"
#include "nn/linear.h"
#include "nn/module.h"
