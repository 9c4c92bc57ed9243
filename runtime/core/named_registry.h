// A table of implementations by name, filled from static initializers (the SY_REGISTER_*
// macros of the backend, communicator and model registries). One per kind of thing, made on
// first use and never destroyed (registrations and lookups may run during static init/exit).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/core/check.h"

namespace sy {

template <typename Factory>
class NamedRegistry {
 public:
  // `what` names the kind in messages ("backend", "model_type", ...).
  explicit NamedRegistry(const char* what) : what_(what) {}

  // Fatal on a null factory or a name registered twice (a build mistake, not an input error).
  bool add(const std::string& name, Factory f) {
    SY_CHECK(f != nullptr) << what_ << " '" << name << "' registered without a factory";
    SY_CHECK(table_.emplace(name, f).second) << what_ << " '" << name << "' is registered twice";
    return true;
  }
  // nullptr when unknown.
  Factory find(const std::string& name) const {
    auto it = table_.find(name);
    return it == table_.end() ? nullptr : it->second;
  }
  std::vector<std::string> names() const {  // sorted
    std::vector<std::string> out;
    for (const auto& [name, f] : table_) out.push_back(name);
    return out;
  }
  // "a, b, c": for "unknown X (known: ...)" messages.
  std::string known() const {
    std::string s;
    for (const auto& [name, f] : table_) s += (s.empty() ? "" : ", ") + name;
    return s;
  }

 private:
  const char* what_;
  std::map<std::string, Factory> table_;
};

}  // namespace sy
