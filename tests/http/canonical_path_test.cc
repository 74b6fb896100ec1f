#include <gtest/gtest.h>

#include <string>

#include "http/server_connection.h"

namespace sluice::http {
namespace {

std::string Canonical(std::string_view path) {
  std::string scratch;
  return std::string(CanonicalPath(path, scratch));
}

TEST(CanonicalPathTest, PlainPathsAreReturnedAsTheyAre) {
  std::string scratch;
  const std::string_view path = "/api/items/7";
  EXPECT_EQ(CanonicalPath(path, scratch).data(), path.data());  // no copy
  EXPECT_EQ(Canonical("/"), "/");
  EXPECT_EQ(Canonical("/api/"), "/api/");
  EXPECT_EQ(Canonical("*"), "*");  // OPTIONS * stays itself
}

TEST(CanonicalPathTest, SpellingsOfTheSamePathBecomeOne) {
  EXPECT_EQ(Canonical("/%61pi/items"), "/api/items");
  EXPECT_EQ(Canonical("/%41PI/x"), "/API/x");
  EXPECT_EQ(Canonical("//api//items"), "/api/items");
  EXPECT_EQ(Canonical("/x/../api/items"), "/api/items");
  EXPECT_EQ(Canonical("/./api/./items/"), "/api/items/");
  EXPECT_EQ(Canonical("/api/items/.."), "/api/");
  EXPECT_EQ(Canonical("/../../api"), "/api");
  EXPECT_EQ(Canonical("/.."), "/");
  EXPECT_EQ(Canonical("http://example.com/api/items"), "/api/items");
  EXPECT_EQ(Canonical("http://example.com"), "/");
  EXPECT_EQ(Canonical("https://example.com//api/./x"), "/api/x");
}

TEST(CanonicalPathTest, ReservedEscapesAndBrokenEscapesStay) {
  EXPECT_EQ(Canonical("/api%2Fitems"), "/api%2Fitems");  // an encoded slash is data
  EXPECT_EQ(Canonical("/a%2"), "/a%2");
  EXPECT_EQ(Canonical("/a%zz"), "/a%zz");
  EXPECT_EQ(Canonical("/%2e%2e/api"), "/api");  // encoded dots are dots
  // An escape that decoding creates is decoded too (found by the fuzzer): the result
  // is a fixed point.
  EXPECT_EQ(Canonical("/%6%61pi"), "/jpi");
  EXPECT_EQ(Canonical("/%%32e%%32e/api"), "/api");
  EXPECT_EQ(Canonical(Canonical("/%%32e%%32e/api")), Canonical("/%%32e%%32e/api"));
}

}  // namespace
}  // namespace sluice::http
