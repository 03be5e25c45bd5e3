// GlooStore forwarding; see gloo_store.h.
#include "dist/gloo_store.h"

#include "core/error.h"

namespace loom::dist {

GlooStore::GlooStore(std::shared_ptr<TCPStore> store, std::string prefix,
                     std::chrono::milliseconds wait_timeout)
    : store_(std::move(store)), prefix_(std::move(prefix)), wait_timeout_(wait_timeout) {
  LOOM_VALUE_CHECK(store_ != nullptr, "GlooStore: the TCPStore is null; create the store first");
}

void GlooStore::set(const std::string& key, const std::vector<char>& data) {
  store_->set(full_key(key), std::string_view(data.data(), data.size()));
}

std::vector<char> GlooStore::get(const std::string& key) {
  if (wait_timeout_.count() > 0) store_->wait({full_key(key)}, wait_timeout_);
  std::string value = store_->get_string(full_key(key));
  return std::vector<char>(value.begin(), value.end());
}

void GlooStore::wait(const std::vector<std::string>& keys) { wait(keys, store_->timeout()); }

void GlooStore::wait(const std::vector<std::string>& keys,
                     const std::chrono::milliseconds& timeout) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (auto& k : keys) full.push_back(full_key(k));
  store_->wait(full, wait_timeout_.count() > 0 ? wait_timeout_
                     : timeout.count() > 0   ? timeout
                                             : store_->timeout());
}

}  // namespace loom::dist
