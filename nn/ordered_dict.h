// OrderedDict: name -> value in insertion order, with lookup by name. What state_dict(),
// named_parameters() and friends return; iterate as `for (auto& [name, t] : dict)`.
#pragma once

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"

namespace loom::nn {

template <class V>
class OrderedDict {
 public:
  using Item = std::pair<std::string, V>;

  // Inserts or replaces (keeping the first position).
  V& insert(const std::string& key, V value) {
    auto it = index_.find(key);
    if (it != index_.end()) return items_[it->second].second = std::move(value);
    index_.emplace(key, items_.size());
    items_.emplace_back(key, std::move(value));
    return items_.back().second;
  }
  size_t count(const std::string& key) const { return index_.count(key); }
  bool contains(const std::string& key) const { return index_.count(key) > 0; }
  const V& at(const std::string& key) const { return items_[position(key)].second; }
  V& at(const std::string& key) { return items_[position(key)].second; }
  const V& operator[](const std::string& key) const { return at(key); }
  V& operator[](const std::string& key) { return at(key); }
  const V* find(const std::string& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &items_[it->second].second;
  }
  bool erase(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    items_.erase(items_.begin() + it->second);
    index_.clear();
    for (size_t i = 0; i < items_.size(); ++i) index_.emplace(items_[i].first, i);
    return true;
  }

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  auto begin() { return items_.begin(); }
  auto end() { return items_.end(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }
  const std::vector<Item>& items() const { return items_; }
  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    for (const auto& [key, v] : items_) k.push_back(key);
    return k;
  }
  std::vector<V> values() const {
    std::vector<V> out;
    for (const auto& [key, v] : items_) out.push_back(v);
    return out;
  }

 private:
  size_t position(const std::string& key) const {
    auto it = index_.find(key);
    if (it == index_.end()) throw ValueError("no entry named '" + key + "'");
    return it->second;
  }
  std::vector<Item> items_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace loom::nn
