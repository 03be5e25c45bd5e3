// GlooStore: lets Gloo rendezvous over a TCPStore, e.g.
// gloo::rendezvous::Context::connectFullMesh(gloo_store, device).
//
// An adapter only: it forwards gloo::rendezvous::Store's set/get/wait (the interface of the
// 2022 Gloo snapshot: no add or check) to TCPStore under a key prefix, so several Gloo
// contexts (process groups) can share one store without their address keys colliding.
// Errors propagate as TCPStore's loom::RuntimeError, which Gloo lets through.
#pragma once

#include <gloo/rendezvous/store.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "dist/tcp_store.h"

namespace loom::dist {

class GlooStore : public gloo::rendezvous::Store {
 public:
  // `prefix` names the group, e.g. "pg/0"; keys become "<prefix>/<gloo key>". A positive
  // `wait_timeout` bounds every get and wait whatever timeout Gloo passes (GlooProcessGroup
  // shrinks the context's timeout while connecting, see its constructor); zero: the timeouts
  // below.
  GlooStore(std::shared_ptr<TCPStore> store, std::string prefix,
            std::chrono::milliseconds wait_timeout = std::chrono::milliseconds(0));

  void set(const std::string& key, const std::vector<char>& data) override;
  // Blocks until the key exists, up to the TCPStore's timeout.
  std::vector<char> get(const std::string& key) override;
  // Gloo's untimed wait uses the TCPStore's timeout: no call may block forever.
  void wait(const std::vector<std::string>& keys) override;
  // A non-positive timeout also means the TCPStore's timeout.
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  const std::string& prefix() const { return prefix_; }

 private:
  std::string full_key(const std::string& key) const { return prefix_ + "/" + key; }

  std::shared_ptr<TCPStore> store_;
  std::string prefix_;
  std::chrono::milliseconds wait_timeout_;
};

}  // namespace loom::dist
