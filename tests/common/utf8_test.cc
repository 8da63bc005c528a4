#include "common/utf8.h"

#include <gtest/gtest.h>

namespace bluegreen {
namespace {

TEST(FindInvalidUtf8Test, AcceptsValidText) {
  EXPECT_EQ(FindInvalidUtf8(""), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), std::string_view::npos);
}

TEST(FindInvalidUtf8Test, FindsTheFirstBadByte) {
  EXPECT_EQ(FindInvalidUtf8("ab\x83" "cd"), 2u);                 // lone continuation byte
  EXPECT_EQ(FindInvalidUtf8("x\xC3"), 1u);                       // truncated sequence
  EXPECT_EQ(FindInvalidUtf8("\xC0\xAF"), 0u);                    // overlong '/'
  EXPECT_EQ(FindInvalidUtf8("\xED\xA0\x80"), 0u);                // surrogate U+D800
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);            // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("ok\xFF"), 2u);
}

}  // namespace
}  // namespace bluegreen

namespace bluegreen {
namespace {

TEST(IsCleanUtf8Test, RejectsNulAndInvalidBytes) {
  EXPECT_TRUE(IsCleanUtf8("caf\xC3\xA9"));
  EXPECT_FALSE(IsCleanUtf8(std::string_view("a\0b", 3)));
  EXPECT_FALSE(IsCleanUtf8("a\xFF"));
}

}  // namespace
}  // namespace bluegreen
