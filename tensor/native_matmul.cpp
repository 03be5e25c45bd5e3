// matmul and linear: shape rules, batch broadcasting and folding, then one gemm kernel call.
//
// Shapes follow PyTorch's matmul: a 1-D left operand is a row (its dim dropped from the
// result), a 1-D right operand a column (likewise), and dims before the last two are batch
// dims that broadcast. Letters: B batch, M rows of a, K the contracted dim, N columns of b.
// Operands reach the kernel as views (a transposed matrix is a BLAS flag, a broadcast batch
// dim a zero stride); only a matrix whose strides BLAS cannot read is copied.
// Deliberately not here: autograd (autograd/ wraps these) and integer matmul (refused).
#include <algorithm>

#include "kernels/cpu/gemm.h"
#include "tensor/native.h"

namespace loom::native {
namespace {

void check_devices(const char* op, const Tensor& a, const Tensor& b) {
  if (a.device() != b.device())
    throw ValueError(detail::concat(op, ": operands are on different devices (", a.device(),
                                    " and ", b.device(), "); move them to one device first"));
}

void check_gemm_dtype(const char* op, DType dtype) {
  if (!is_floating(dtype))
    throw ValueError(detail::concat(
        op, ": integer and bool dtypes are not supported (got ", dtype,
        "); PyTorch has an integer CPU matmul but loom does not: convert with .to(DType::f32)"));
}

// A (rows, cols) matrix operand for the kernel: the tensor (possibly made contiguous) and
// the strides of its last two dims.
Tensor blas_ready(const Tensor& t, DType dtype) {
  int64_t n = t.dim();
  if (kernels::cpu::gemm_accepts(dtype, t.sizes()[n - 2], t.sizes()[n - 1], t.strides()[n - 2],
                                 t.strides()[n - 1]))
    return t;
  return contiguous(t);
}

// Batch dims as the kernel wants them: size-1 dims dropped and neighbours merged where every
// operand's strides allow, so a contiguous batch is one dim.
struct BatchDims {
  Shape sizes, a, b, c;
};

BatchDims collapse_batch(const Shape& sizes, const Shape& sa, const Shape& sb, const Shape& sc) {
  BatchDims out;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 1) continue;
    if (!out.sizes.empty()) {
      int64_t s = sizes[i];
      bool mergeable = out.a.back() == sa[i] * s && out.b.back() == sb[i] * s &&
                       out.c.back() == sc[i] * s;
      if (mergeable) {
        out.sizes.back() *= s;
        out.a.back() = sa[i];
        out.b.back() = sb[i];
        out.c.back() = sc[i];
        continue;
      }
    }
    out.sizes.push_back(sizes[i]);
    out.a.push_back(sa[i]);
    out.b.push_back(sb[i]);
    out.c.push_back(sc[i]);
  }
  return out;
}

// C (B..., M, N) = A (B..., M, K) @ B (B..., K, N) + beta * C with equal batch shapes (A and B
// may have zero batch strides). C is a contiguous tensor or a view of one.
void run_gemm(const Tensor& a, const Tensor& b, const Tensor& c, float beta,
              const Tensor& bias = Tensor()) {
  int64_t nd = c.dim();
  int64_t m = c.sizes()[nd - 2], n = c.sizes()[nd - 1], k = a.sizes()[nd - 1];
  if (c.numel() == 0) return;
  if (k == 0) {  // an empty sum: C = beta * C (+ bias)
    if (bias.defined()) {
      copy_(c, expand(reshape(bias, {1, n}), c.sizes()));
    } else if (beta == 0.0f) {
      fill_(c, 0.0);
    }
    return;
  }
  Shape batch(c.sizes().begin(), c.sizes().end() - 2);
  BatchDims bd = collapse_batch(batch, Shape(a.strides().begin(), a.strides().end() - 2),
                                Shape(b.strides().begin(), b.strides().end() - 2),
                                Shape(c.strides().begin(), c.strides().end() - 2));
  kernels::cpu::GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a.raw_data_ptr();
  g.a_rs = a.strides()[nd - 2];
  g.a_cs = a.strides()[nd - 1];
  g.b = b.raw_data_ptr();
  g.b_rs = b.strides()[nd - 2];
  g.b_cs = b.strides()[nd - 1];
  g.c = c.raw_data_ptr();
  g.c_rs = c.strides()[nd - 2];
  g.c_cs = c.strides()[nd - 1];
  g.beta = beta;
  if (bias.defined()) g.bias = bias.raw_data_ptr();
  g.batch_ndim = int64_t(bd.sizes.size());
  g.batch_sizes = bd.sizes.data();
  g.a_batch_strides = bd.a.data();
  g.b_batch_strides = bd.b.data();
  g.c_batch_strides = bd.c.data();
  c.storage()->bump_version();
  kernels::cpu::gemm_table().get(c.device().type, c.dtype(), "matmul")(g);
}

// Views t's leading dims and dim -2 as one dim of rows, when its strides allow it:
// (B..., M, K) -> (B*...*M, K). Undefined when they do not. Size-1 dims carry no stride
// information and are skipped.
Tensor try_fold_rows(const Tensor& t) {
  const int64_t nd = t.dim();
  int64_t rows = 1, row_stride = 0, prev_stride = 0, prev_size = 0;
  bool have = false;
  for (int64_t d = nd - 2; d >= 0; --d) {
    const int64_t size = t.sizes()[d], stride = t.strides()[d];
    rows *= size;
    if (size == 1) continue;
    if (!have) {
      row_stride = stride;
      have = true;
    } else if (stride != prev_stride * prev_size) {
      return Tensor();
    }
    prev_stride = stride;
    prev_size = size;
  }
  if (!have) row_stride = std::max<int64_t>(t.sizes()[nd - 1], 1);
  return as_strided(t, {rows, t.sizes()[nd - 1]}, {row_stride, t.strides()[nd - 1]},
                    t.storage_offset());
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  const char* op = "matmul";
  check_devices(op, a, b);
  const int64_t da = a.dim(), db = b.dim();
  if (da == 0 || db == 0)
    throw ValueError(detail::concat(op, ": both arguments need at least 1 dimension, got shapes ",
                                    shape_str(a.sizes()), " and ", shape_str(b.sizes())));
  if (a.dtype() != b.dtype())
    throw ValueError(detail::concat(op, ": both operands must have the same dtype, got ",
                                    a.dtype(), " and ", b.dtype(),
                                    "; convert one with .to(dtype) first"));
  const int64_t ka = a.sizes()[da - 1];
  const int64_t kb = db == 1 ? b.sizes()[0] : b.sizes()[db - 2];
  if (ka != kb)
    throw ValueError(detail::concat(op, ": shapes ", shape_str(a.sizes()), " and ",
                                    shape_str(b.sizes()), " cannot be multiplied (", ka, " != ",
                                    kb, ")"));
  check_gemm_dtype(op, a.dtype());

  // Canonical operands: A (Ba..., M, K), B (Bb..., K, N), 1-D operands given a unit dim.
  Tensor a2 = da == 1 ? unsqueeze(a, 0) : a;
  Tensor b2 = db == 1 ? unsqueeze(b, 1) : b;
  const int64_t m = a2.sizes()[a2.dim() - 2], n = b2.sizes()[b2.dim() - 1];
  Shape batch_a(a2.sizes().begin(), a2.sizes().end() - 2);
  Shape batch_b(b2.sizes().begin(), b2.sizes().end() - 2);
  Shape batch = broadcast_shapes(batch_a, batch_b, op);

  Shape out_shape = batch;
  if (da >= 2) out_shape.push_back(m);
  if (db >= 2) out_shape.push_back(n);
  Tensor out = empty(out_shape, a.dtype(), a.device());
  if (a.is_meta()) return out;

  Shape full = batch;  // out seen with both matrix dims
  full.push_back(m);
  full.push_back(n);
  Tensor c = view(out, full);

  // (B..., M, K) @ (K, N): one (B*...*M, K) @ (K, N) GEMM when A's rows fold into one dim.
  if (db <= 2 && !batch.empty()) {
    if (Tensor a_rows = try_fold_rows(a2); a_rows.defined()) {
      int64_t rows = a_rows.sizes()[0];
      run_gemm(blas_ready(a_rows, a.dtype()), blas_ready(b2, a.dtype()), view(out, {rows, n}),
               0.0f);
      return out;
    }
  }
  // Make each matrix BLAS-readable before broadcasting, so a copy never materialises a
  // broadcast batch dim.
  Tensor ae = blas_ready(a2, a.dtype());
  Tensor be = blas_ready(b2, a.dtype());
  Shape full_a = batch, full_b = batch;
  full_a.insert(full_a.end(), {m, ka});
  full_b.insert(full_b.end(), {ka, n});
  run_gemm(expand(ae, full_a), expand(be, full_b), c, 0.0f);
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "linear";
  check_devices(op, x, weight);
  if (bias.defined()) check_devices(op, x, bias);
  if (weight.dim() != 2)
    throw ValueError(detail::concat(op, ": weight must be 2-D (out_features, in_features), got ",
                                    shape_str(weight.sizes())));
  if (x.dim() == 0)
    throw ValueError(detail::concat(op, ": input must have at least 1 dimension, got shape []"));
  const int64_t in = weight.sizes()[1], out_features = weight.sizes()[0];
  if (x.sizes().back() != in)
    throw ValueError(detail::concat(op, ": input ", shape_str(x.sizes()), " and weight ",
                                    shape_str(weight.sizes()), " cannot be multiplied (",
                                    x.sizes().back(), " != ", in,
                                    "): input.size(-1) must equal in_features"));
  if (x.dtype() != weight.dtype() || (bias.defined() && bias.dtype() != x.dtype()))
    throw ValueError(detail::concat(op, ": input, weight and bias must have the same dtype, got ",
                                    x.dtype(), ", ", weight.dtype(),
                                    bias.defined() ? detail::concat(", ", bias.dtype()) : "",
                                    "; convert with .to(dtype) first"));
  if (bias.defined() && (bias.dim() > 1 || bias.numel() != out_features))
    throw ValueError(detail::concat(op, ": bias must have shape [", out_features, "], got ",
                                    shape_str(bias.sizes())));
  check_gemm_dtype(op, x.dtype());

  Shape out_shape(x.sizes().begin(), x.sizes().end() - 1);
  out_shape.push_back(out_features);
  Tensor out = empty(out_shape, x.dtype(), x.device());
  if (x.is_meta()) return out;

  // x (R..., in) as (R, in) rows; weight^T (in, out) is a transposed view, not a copy.
  Tensor x2 = x.dim() == 1 ? unsqueeze(x, 0) : x;
  Tensor rows = try_fold_rows(x2);
  if (!rows.defined()) rows = try_fold_rows(contiguous(x2));
  const int64_t r = rows.sizes()[0];
  Tensor c = view(out, {r, out_features});
  // The bias goes to the kernel as a row added to C's (oneDNN adds it in the GEMM, the other
  // kernels fill C with it first): contiguous, as a 1-D view of n values.
  Tensor bias_row = bias.defined() ? contiguous(reshape(bias, {out_features})) : Tensor();
  run_gemm(blas_ready(rows, x.dtype()), blas_ready(transpose(weight, 0, 1), x.dtype()), c, 0.0f,
           bias_row);
  return out;
}

}  // namespace loom::native
