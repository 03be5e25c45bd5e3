// Forward-only ops: validate, infer the output shape and dtype, allocate, dispatch a kernel.
//
// Every op here accepts meta inputs and returns meta outputs of the right shape and dtype
// without allocating or calling a kernel (Note [Meta tensors]). None records autograd
// history: autograd/ wraps these into the public differentiable ops (Note [Op layers]).
// Inputs may be non-contiguous; outputs are freshly allocated contiguous tensors unless the
// op is a view. Shape errors name the op and both shapes.
#pragma once

#include <optional>
#include <tuple>

#include "tensor/tensor.h"

namespace loom {
enum class Reduction { none, mean, sum };
}  // namespace loom

namespace loom::native {

// ---- allocation and views (tensor/native_core.cpp) ----
// A contiguous tensor whose storage is allocated lazily, on first data access.
Tensor empty(const Shape& sizes, DType dtype, Device device);
Tensor empty_like(const Tensor& t);
Tensor empty_like(const Tensor& t, DType dtype);
// A view of t's storage with the given metadata (no checks beyond bounds).
Tensor as_strided(const Tensor& t, const Shape& sizes, const Shape& strides, int64_t offset);
Tensor view(const Tensor& t, const Shape& sizes);  // throws when strides do not allow it
Tensor reshape(const Tensor& t, const Shape& sizes);
Tensor transpose(const Tensor& t, int64_t d0, int64_t d1);
Tensor permute(const Tensor& t, const Shape& dims);
Tensor slice(const Tensor& t, int64_t dim, std::optional<int64_t> start, std::optional<int64_t> end,
             int64_t step);
Tensor select(const Tensor& t, int64_t dim, int64_t index);
Tensor expand(const Tensor& t, const Shape& sizes);
Tensor squeeze(const Tensor& t, std::optional<int64_t> dim);
Tensor unsqueeze(const Tensor& t, int64_t dim);
Tensor contiguous(const Tensor& t);  // t itself when already contiguous
Tensor clone(const Tensor& t);       // always a fresh contiguous copy
Tensor to(const Tensor& t, Device device, DType dtype);  // t itself when nothing changes
// Resolves one -1 in `sizes` against numel; throws ValueError naming op on mismatch.
Shape infer_size(const Shape& sizes, int64_t numel, const char* op);

// ---- in-place (tensor/native_core.cpp); each bumps dst's version ----
void copy_(const Tensor& dst, const Tensor& src);  // broadcast + dtype conversion
void fill_(const Tensor& dst, Scalar value);

// ---- elementwise (tensor/native_elementwise.cpp) ----
enum class BinaryOp { add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge };
enum class UnaryOp {
  neg, exp, log, sqrt, rsqrt, abs, tanh, sigmoid, relu, gelu_tanh, gelu_erf, square, sign,
  logical_not
};
// Broadcasts; arithmetic results take promote_types(a, b); comparisons give bool.
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
// In place: a = a op b (b broadcast to a's shape, result cast to a's dtype).
void binary_(BinaryOp op, const Tensor& a, const Tensor& b);
// A 0-dim tensor holding `value` with the dtype an arithmetic op with `like` should see.
Tensor wrap_scalar(Scalar value, const Tensor& like);
// Floating ops (exp, log, ...) on integer inputs compute in the default dtype.
Tensor unary(UnaryOp op, const Tensor& x);
// grad_in = grad_out * d op(x) / dx, given x and out = op(x) (whichever the op needs).
Tensor unary_backward(UnaryOp op, const Tensor& grad_out, const Tensor& x, const Tensor& out);
// Which of x and out unary_backward reads for op; the other may be left undefined.
enum class UnaryBackwardReads { nothing, input, output };
UnaryBackwardReads unary_backward_reads(UnaryOp op);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // cond: bool
Tensor clamp(const Tensor& x, std::optional<Scalar> lo, std::optional<Scalar> hi);
Tensor masked_fill(const Tensor& x, const Tensor& mask, Scalar value);  // mask broadcasts to x
// out = x + alpha * y, fused (optimizers, gradient accumulation).
Tensor add_scaled(const Tensor& x, const Tensor& y, Scalar alpha);

// ---- reductions (tensor/native_reduce.cpp); empty dims = all dims ----
// f16/bf16 accumulate in f32; integer sums give i64 (as PyTorch).
Tensor sum(const Tensor& x, const Shape& dims, bool keepdim, std::optional<DType> dtype = {});
Tensor mean(const Tensor& x, const Shape& dims, bool keepdim);
Tensor var(const Tensor& x, const Shape& dims, int64_t correction, bool keepdim);
Tensor amax(const Tensor& x, const Shape& dims, bool keepdim);
Tensor amin(const Tensor& x, const Shape& dims, bool keepdim);
// (values, i64 indices) along one dim; the first index wins ties.
std::tuple<Tensor, Tensor> max_dim(const Tensor& x, int64_t dim, bool keepdim);
std::tuple<Tensor, Tensor> min_dim(const Tensor& x, int64_t dim, bool keepdim);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim);
// Sums `grad` over the broadcast dims so that it has `shape` (broadcast backward).
Tensor sum_to(const Tensor& grad, const Shape& shape);

// ---- softmax family (tensor/native_softmax.cpp); subtract the max first ----
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
Tensor softmax_backward(const Tensor& grad_out, const Tensor& out, int64_t dim);
Tensor log_softmax_backward(const Tensor& grad_out, const Tensor& out, int64_t dim);

// ---- losses (tensor/native_loss.cpp) ----
// Declared in namespace loom (not native) so that argument-dependent lookup of a call like
// cross_entropy(logits, target, -100, 0.0, Reduction::sum) finds only the public op.
using loom::Reduction;
// logits (N, C) or (N, C, d1...) or (C); target i64 class indices of the matching shape.
// Mean reduction divides by the number of targets not equal to ignore_index.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                     double label_smoothing, Reduction reduction);
Tensor cross_entropy_backward(const Tensor& grad_out, const Tensor& logits, const Tensor& target,
                              int64_t ignore_index, double label_smoothing, Reduction reduction);

// ---- normalisation (tensor/native_norm.cpp) ----
// Normalises over the trailing dims of `normalized_shape`; weight/bias may be undefined.
// Returns (out, mean, rstd) with mean/rstd of shape x.shape[:-k] (f32 for low precision).
std::tuple<Tensor, Tensor, Tensor> layer_norm(const Tensor& x, const Shape& normalized_shape,
                                              const Tensor& weight, const Tensor& bias,
                                              double eps);
// Returns (grad_x, grad_weight, grad_bias); the last two undefined when weight/bias are.
std::tuple<Tensor, Tensor, Tensor> layer_norm_backward(const Tensor& grad_out, const Tensor& x,
                                                       const Shape& normalized_shape,
                                                       const Tensor& mean, const Tensor& rstd,
                                                       const Tensor& weight, const Tensor& bias);

// ---- indexing (tensor/native_index.cpp) ----
Tensor embedding(const Tensor& weight, const Tensor& indices);  // (V, D) x (...) -> (..., D)
Tensor embedding_backward(const Tensor& grad_out, const Tensor& indices, int64_t num_weights);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out = x with out.index_select(dim, index) += source (scatter-add; repeated indices add up).
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source);
Tensor tril(const Tensor& x, int64_t diagonal);
Tensor triu(const Tensor& x, int64_t diagonal);
Tensor cat(const TensorList& tensors, int64_t dim);
Tensor stack(const TensorList& tensors, int64_t dim);
TensorList split(const Tensor& x, int64_t split_size, int64_t dim);              // views
TensorList split_with_sizes(const Tensor& x, const Shape& sizes, int64_t dim);  // views
TensorList chunk(const Tensor& x, int64_t chunks, int64_t dim);                 // views

// ---- linear algebra (tensor/native_matmul.cpp) ----
// PyTorch's matmul semantics: 1-D..N-D, batch dims broadcast. f16/bf16 are converted to f32
// in blocks for the GEMM and rounded back.
Tensor matmul(const Tensor& a, const Tensor& b);
// out = a @ b^T + bias: the Linear layer's fused forward (bias may be undefined).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// ---- random (tensor/random.cpp) ----
// Keep-mask for dropout: 1/(1-p) with probability 1-p, else 0, in x's dtype and shape.
Tensor dropout_mask(const Tensor& like, double p);

}  // namespace loom::native
