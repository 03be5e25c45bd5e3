// Tensor: a shared handle to metadata (shape, strides, offset, dtype) over a Storage.
//
// Copying a Tensor copies the handle: both names see the same data, the same grad and the
// same autograd history, as in PyTorch. Views share Storage and differ in metadata.
//
// Note [Op layers]: tensor/ defines the metadata, storage and the forward-only ops in
// `loom::native` (tensor/native.h). The differentiable public ops -- the math methods of
// Tensor below and the free functions of tensor/ops.h -- are declared here and defined in
// autograd/, which wraps each native op and records a graph node. tensor/ therefore knows
// nothing of autograd internals (only that a Node type exists), and nothing in tensor/'s own
// sources calls a public op, so there is no link cycle.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ostream>
#include <tuple>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "tensor/shape.h"
#include "tensor/storage.h"

namespace loom {

namespace autograd {
class Node;
}

class Tensor;
using TensorList = std::vector<Tensor>;
using Scalar = double;

// Called with the incoming gradient of a tensor during backward; may return a replacement
// (an undefined Tensor keeps the gradient as it is).
using GradHook = std::function<Tensor(const Tensor&)>;
// Called on a leaf right after backward accumulated into its .grad() (DDP starts its bucket
// all-reduce from these while backward still runs).
using PostAccumulateGradHook = std::function<void(Tensor&)>;

// Note [Autograd fields]: every tensor carries these few fields; they are set and read by
// autograd/ only. A tensor with a grad_fn is a non-leaf output of a recorded op.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape sizes;
  Shape strides;       // in elements, not bytes
  int64_t offset = 0;  // in elements, into storage
  DType dtype = DType::f32;

  bool requires_grad = false;
  bool retains_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
  uint32_t output_nr = 0;  // which output of grad_fn this is
  std::weak_ptr<autograd::Node> grad_accumulator;  // a leaf's AccumulateGrad, while in a graph
  std::vector<std::pair<int, GradHook>> grad_hooks;
  std::vector<std::pair<int, PostAccumulateGradHook>> post_accumulate_grad_hooks;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- metadata (tensor/tensor.cpp) ----
  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

  int64_t dim() const { return int64_t(checked().sizes.size()); }
  int64_t ndim() const { return dim(); }
  const Shape& sizes() const { return checked().sizes; }
  const Shape& shape() const { return sizes(); }
  int64_t size(int64_t d) const;
  const Shape& strides() const { return checked().strides; }
  int64_t stride(int64_t d) const;
  int64_t storage_offset() const { return checked().offset; }
  int64_t numel() const;
  DType dtype() const { return checked().dtype; }
  Device device() const { return checked().storage->device(); }
  bool is_meta() const { return device().is_meta(); }
  bool is_cpu() const { return device().is_cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_floating_point() const { return is_floating(dtype()); }
  bool is_contiguous() const;
  size_t element_size() const { return dtype_size(dtype()); }
  size_t nbytes() const { return size_t(numel()) * element_size(); }
  const std::shared_ptr<Storage>& storage() const { return checked().storage; }
  bool is_materialized() const { return storage()->is_materialized(); }
  uint64_t version() const { return storage()->version(); }

  // ---- raw data (materialises lazy storage; throws on meta) ----
  void* raw_data_ptr() const;  // first element of this view
  template <class T>
  T* data_ptr() const {
    check_dtype_is(dtype_of<std::remove_const_t<T>>(), "data_ptr");
    return static_cast<T*>(raw_data_ptr());
  }
  // The single element of a one-element tensor, converted to T.
  template <class T>
  T item() const {
    return from_double<T>(item_double());
  }
  double item_double() const;
  // One element by index (tests, debugging); converted to T.
  template <class T>
  T at(std::initializer_list<int64_t> index) const {
    return from_double<T>(at_double(Shape(index)));
  }
  double at_double(const Shape& index) const;
  // All elements in row-major order, converted to T.
  template <class T>
  std::vector<T> to_vector() const {
    std::vector<double> v = to_double_vector();
    std::vector<T> out;
    out.reserve(v.size());
    for (double x : v) out.push_back(from_double<T>(x));
    return out;
  }
  std::vector<double> to_double_vector() const;

  // ---- in-place writes (not recorded by autograd; bump the version counter) ----
  Tensor& copy_(const Tensor& src);  // broadcasts src, converts dtype, crosses devices
  Tensor& fill_(Scalar value);
  Tensor& zero_();
  Tensor& add_(const Tensor& other, Scalar alpha = 1.0);
  Tensor& add_(Scalar other);
  Tensor& sub_(const Tensor& other, Scalar alpha = 1.0);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(Scalar other);
  Tensor& div_(const Tensor& other);
  Tensor& div_(Scalar other);
  Tensor& clamp_(std::optional<Scalar> lo, std::optional<Scalar> hi);
  Tensor& uniform_(double lo = 0.0, double hi = 1.0);
  Tensor& normal_(double mean = 0.0, double std = 1.0);

  // ---- autograd state (autograd/) ----
  bool requires_grad() const { return checked().requires_grad; }
  Tensor& set_requires_grad(bool r = true);
  Tensor& requires_grad_(bool r = true) { return set_requires_grad(r); }
  bool is_leaf() const { return checked().grad_fn == nullptr; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return checked().grad_fn; }
  Tensor grad() const;                 // undefined until backward reaches it
  void set_grad(const Tensor& g);      // undefined clears it
  void retain_grad();                  // keep .grad() for a non-leaf
  Tensor detach() const;               // same storage, no history
  // Runs backward from this tensor; `gradient` defaults to 1 for a one-element tensor.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  int register_hook(GradHook hook);
  int register_post_accumulate_grad_hook(PostAccumulateGradHook hook);
  void remove_hook(int handle);

  // ---- views and conversions (differentiable; autograd/) ----
  Tensor view(const Shape& shape) const;     // one -1 allowed; needs compatible strides
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // 2-D transpose
  Tensor permute(const Shape& dims) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, std::optional<int64_t> start, std::optional<int64_t> end,
               int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor expand(const Shape& shape) const;  // -1 keeps a size
  Tensor expand_as(const Tensor& other) const { return expand(other.sizes()); }
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor to(Device device, DType dtype) const;
  Tensor type_as(const Tensor& other) const { return to(other.dtype()); }
  TensorList split(int64_t split_size, int64_t dim = 0) const;
  TensorList chunk(int64_t chunks, int64_t dim = 0) const;

  // ---- math (differentiable; autograd/) ----
  Tensor add(const Tensor& other, Scalar alpha = 1.0) const;
  Tensor sub(const Tensor& other, Scalar alpha = 1.0) const;
  Tensor mul(const Tensor& other) const;
  Tensor div(const Tensor& other) const;
  Tensor pow(Scalar exponent) const;
  Tensor pow(const Tensor& exponent) const;
  Tensor neg() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor abs() const;
  Tensor tanh() const;
  Tensor sigmoid() const;
  Tensor relu() const;
  Tensor gelu(bool tanh_approximation = false) const;
  Tensor square() const;
  Tensor maximum(const Tensor& other) const;
  Tensor minimum(const Tensor& other) const;
  Tensor clamp(std::optional<Scalar> lo, std::optional<Scalar> hi) const;
  Tensor masked_fill(const Tensor& mask, Scalar value) const;
  Tensor matmul(const Tensor& other) const;
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;
  Tensor var(const Shape& dims, int64_t correction = 1, bool keepdim = false) const;
  Tensor max() const;  // over all elements
  Tensor min() const;
  std::tuple<Tensor, Tensor> max(int64_t dim, bool keepdim = false) const;  // values, indices
  std::tuple<Tensor, Tensor> min(int64_t dim, bool keepdim = false) const;
  Tensor argmax(int64_t dim, bool keepdim = false) const;
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;
  Tensor tril(int64_t diagonal = 0) const;
  Tensor triu(int64_t diagonal = 0) const;
  Tensor index_select(int64_t dim, const Tensor& index) const;
  Tensor norm(double p = 2.0) const;

  // ---- comparisons (bool results, not differentiable) ----
  Tensor eq(const Tensor& other) const;
  Tensor ne(const Tensor& other) const;
  Tensor lt(const Tensor& other) const;
  Tensor le(const Tensor& other) const;
  Tensor gt(const Tensor& other) const;
  Tensor ge(const Tensor& other) const;
  Tensor eq(Scalar other) const;
  Tensor lt(Scalar other) const;
  Tensor gt(Scalar other) const;

  // Equal shapes and every element within atol + rtol * |other| (NaNs compare unequal).
  bool allclose(const Tensor& other, double rtol = 1e-5, double atol = 1e-8) const;
  bool equal(const Tensor& other) const;  // same shape and exactly equal values

  std::string str() const;  // printable summary with values, shape, dtype and device

 private:
  const TensorImpl& checked() const {
    if (!impl_) [[unlikely]] throw_undefined();
    return *impl_;
  }
  [[noreturn]] static void throw_undefined();
  void check_dtype_is(DType expected, const char* op) const;

  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Arithmetic operators (autograd/). A Scalar operand takes the tensor's dtype when that is
// floating (so `x * 2.0` stays f32), as PyTorch's wrapped numbers do.
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, Scalar b);
Tensor operator-(const Tensor& a, Scalar b);
Tensor operator*(const Tensor& a, Scalar b);
Tensor operator/(const Tensor& a, Scalar b);
Tensor operator+(Scalar a, const Tensor& b);
Tensor operator-(Scalar a, const Tensor& b);
Tensor operator*(Scalar a, const Tensor& b);
Tensor operator/(Scalar a, const Tensor& b);
Tensor& operator+=(Tensor& a, const Tensor& b);  // in place (add_)
Tensor& operator-=(Tensor& a, const Tensor& b);
Tensor& operator*=(Tensor& a, const Tensor& b);
Tensor& operator/=(Tensor& a, const Tensor& b);

}  // namespace loom
