// The four seams register their implementations by name from their own files (routers:
// routers/registry.h; backends: runtime/backend/backend.h; communicators: comm/communicator.h;
// models: runtime/model/model.h). A registration dropped at link time (a static archive leaves
// out objects nobody references) would make a name silently unknown: this test links the
// libraries the way the binary does and asks each registry for its built-ins.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "routers/registry.h"
#include "runtime/backend/backend.h"
#include "runtime/model/model.h"

namespace sy {
namespace {

bool Has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Registries, ListTheirBuiltIns) {
  EXPECT_TRUE(Has(backend_names(), "cpu"));
  for (const char* m : {"qwen2_moe", "bert", "bert_moe"}) EXPECT_TRUE(Has(model_types(), m)) << m;
  EXPECT_TRUE(Has(communicator_names(), "local"));
  for (const char* r : {"linear", "attention", "mlp", "hybrid", "mlp_hadamard", "hash"})
    EXPECT_TRUE(Has(router_names(), r)) << r;
}

TEST(Registries, MakeByNameOrSayWhatIsKnown) {
  auto local = make_communicator("local");
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  EXPECT_EQ((*local)->size(), 1);
  EXPECT_STREQ((*local)->backend(), "local");
  auto bad = make_communicator("carrier-pigeon");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("local"), std::string::npos) << bad.status().ToString();
  EXPECT_EQ(find_backend("no-such-backend"), nullptr);
  const ExecContext* det = make_context("cpu", /*deterministic=*/true);
  ASSERT_NE(det, nullptr);
  EXPECT_TRUE(det->deterministic);
  EXPECT_EQ(det, make_context("cpu", true));  // one context per (backend, flag)
  EXPECT_FALSE(default_context().deterministic);
}

}  // namespace
}  // namespace sy
