// Backend conformance, part 3 (linked into backend_conformance_test): the coverage check. Every
// operation a backend implements (class Backend's virtuals and its Memory's, read from the
// headers) must have a conformance case, and every case listed here must exist for every
// registered backend.
#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "tests/runtime/backend_conformance.h"

namespace sy {
namespace conformance {
namespace {

// ---- coverage --------------------------------------------------------------------------------

// Every operation of the Backend table, by the TEST_P above that checks it. Adding an op to
// Backend fails EveryOpHasACase until a case for it is written and the op is listed here.
const std::map<std::string, std::string>& covered_ops() {  // op -> test
  static const std::pair<const char*, const char*> kByTest[] = {
      {"Memory",
       "alloc free copy_from_host copy_to_host copy fill_zero synchronize copy_within zero"},
      {"Gemm", "gemm"},
      {"Linear", "linear_forward linear_backward"},
      {"LinearQuantized", "linear_forward_quantized dequantize_rows"},
      {"GroupedLinear", "grouped_linear_forward"},
      {"GroupedLinearBackward", "grouped_linear_backward"},
      {"GemmBf16", "supports_bf16"},
      {"Softmax", "softmax_rows logsumexp_rows softmax_backward_rows"},
      {"TopK", "topk_rows"},
      {"Activations",
       "silu_inplace gelu_inplace silu_backward gelu_backward swiglu swiglu_backward"},
      {"AddAndBias",
       "add_inplace add_bias_rows scatter_add_rows bias_broadcast_rows "
       "bias_backward_rows"},
      {"Norms",
       "rmsnorm_forward rmsnorm_backward layernorm_forward add_layernorm_forward "
       "layernorm_backward"},
      {"Rope", "rope_apply"},
      {"Attention", "attention_forward attention_backward"},
      {"CrossEntropy", "cross_entropy_sum cross_entropy_backward"},
      {"CapacityPlan", "capacity_plan"},
      {"Routing", "gather_topk_probs hash_route"},
      {"RouterRows",
       "normalize_rows topk_weights_backward switch_aux_loss axpy dot_add embedding_rows"},
      {"PermuteCombine", "gather_rows combine_rows scatter_rows_weighted combine_weights_backward"},
      {"GatedShared", "gated_add_rows gated_add_rows_backward"},
      {"AdamW", "adamw_update"},
      {"Reductions", "sum_squares dot all_finite"},
  };
  static const std::map<std::string, std::string> ops = [] {
    std::map<std::string, std::string> m;
    for (const auto& [test, names] : kByTest) {
      std::istringstream in(names);
      for (std::string op; in >> op;) EXPECT_TRUE(m.emplace(op, test).second) << op << " twice";
    }
    return m;
  }();
  return ops;
}

// The "virtual <type> <name>(" declarations in the body of the class that `opening` starts, in
// the source file `path`.
std::set<std::string> virtuals_of(const std::string& path, const std::string& opening) {
  std::ifstream f(std::string(SY_SOURCE_DIR) + "/" + path);
  std::stringstream text;
  text << f.rdbuf();
  const std::string src = text.str();
  const size_t begin = src.find(opening), end = src.find("\n};", begin);
  if (begin == std::string::npos || end == std::string::npos) return {};
  const std::string body = src.substr(begin, end - begin);
  const std::regex decl(R"(virtual\s+(?:const\s+)?[\w:<>]+\s*[*&]?\s*(\w+)\s*\()");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(body.begin(), body.end(), decl); it != std::sregex_iterator();
       ++it)
    names.insert((*it)[1]);
  return names;
}

// The operations a backend implements, read from the headers themselves: class Backend's
// virtuals and those of the Memory it is (runtime/core/memory.h), minus the identity ones
// (name, device, memory_name, host_accessible), which are not ops.
std::set<std::string> declared_ops() {
  std::set<std::string> names =
      virtuals_of("runtime/backend/backend.h", "class Backend : public Memory {");
  const std::set<std::string> memory = virtuals_of("runtime/core/memory.h", "class Memory {");
  if (names.empty() || memory.empty()) return {};
  names.insert(memory.begin(), memory.end());
  for (const char* id :
       {"name", "device", "memory_name", "host_accessible", "unavailable_reason", "groups_experts"})
    names.erase(id);
  return names;
}

// What this checks: the op names declared in backend.h equal the names listed in covered_ops(),
// both ways, and each listed test exists for every registered backend. What it cannot check: that
// the listed test really exercises the op; that is the promise a reviewer reads in the list.
TEST(BackendConformanceCoverage, EveryOpHasACase) {
  const std::set<std::string> declared = declared_ops();
  ASSERT_GE(declared.size(), 40u) << "could not read the Backend table from backend.h";
  for (const std::string& op : declared)
    EXPECT_EQ(covered_ops().count(op), 1u)
        << "Backend::" << op << " has no conformance case: add one and list it in covered_ops()";
  for (const auto& [op, test] : covered_ops()) {
    EXPECT_EQ(declared.count(op), 1u) << "covered_ops() lists '" << op << "', not in Backend";
    for (const std::string& backend : backend_names()) {
      const std::string full = "AllBackends/BackendConformance." + test + "/" + backend;
      bool found = false;
      const ::testing::UnitTest& ut = *::testing::UnitTest::GetInstance();
      for (int i = 0; i < ut.total_test_suite_count() && !found; ++i) {
        const ::testing::TestSuite& s = *ut.GetTestSuite(i);
        for (int j = 0; j < s.total_test_count() && !found; ++j)
          found = std::string(s.name()) + "." + s.GetTestInfo(j)->name() == full;
      }
      EXPECT_TRUE(found) << op << ": no test " << full;
    }
  }
}

// The CPU backend is always there (the reference every later backend is held to), and
// referencing default_context() links its registration into this binary.
TEST(BackendConformanceCoverage, CpuIsRegistered) {
  EXPECT_STREQ(default_context().backend->name(), "cpu");
  const std::vector<std::string> names = backend_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "cpu"), names.end());
}

}  // namespace
}  // namespace conformance
}  // namespace sy
