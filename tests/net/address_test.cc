#include "net/address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

namespace sluice::net {
namespace {

IpAddress Ip(std::string_view text) {
  const std::optional<IpAddress> a = IpAddress::Parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(IpAddress());
}

TEST(IpAddressTest, ParsesBothFamiliesAndFormatsCanonically) {
  EXPECT_EQ(Ip("10.1.2.3").ToString(), "10.1.2.3");
  EXPECT_TRUE(Ip("10.1.2.3").is_v4());
  EXPECT_EQ(Ip("2001:0db8:0:0::1").ToString(), "2001:db8::1");
  EXPECT_FALSE(Ip("::1").is_v4());
  // An IPv4-mapped IPv6 address is the same client as the IPv4 one.
  EXPECT_EQ(Ip("::ffff:10.1.2.3"), Ip("10.1.2.3"));
}

TEST(IpAddressTest, RejectsWhatIsNotAnAddress) {
  for (std::string_view bad : std::initializer_list<std::string_view>{
           "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", "[::1]", "fe80::1%eth0",
           "example.com", "1.2.3.4/8", std::string_view("10.0.0.1\0junk", 13)}) {
    EXPECT_FALSE(IpAddress::Parse(bad).has_value()) << bad;
  }
}

TEST(CidrTest, MatchesItsBlockOnly) {
  const Cidr ten = *Cidr::Parse("10.0.0.0/8");
  EXPECT_TRUE(ten.Contains(Ip("10.255.0.1")));
  EXPECT_FALSE(ten.Contains(Ip("11.0.0.1")));
  EXPECT_TRUE(ten.Contains(Ip("::ffff:10.0.0.1")));
  const Cidr odd = *Cidr::Parse("192.168.1.128/25");
  EXPECT_TRUE(odd.Contains(Ip("192.168.1.200")));
  EXPECT_FALSE(odd.Contains(Ip("192.168.1.127")));
  const Cidr v6 = *Cidr::Parse("2001:db8::/32");
  EXPECT_TRUE(v6.Contains(Ip("2001:db8:ffff::1")));
  EXPECT_FALSE(v6.Contains(Ip("2001:db9::1")));
  EXPECT_FALSE(v6.Contains(Ip("10.0.0.1")));
  EXPECT_TRUE(Cidr::Parse("0.0.0.0/0")->Contains(Ip("8.8.8.8")));
  EXPECT_FALSE(Cidr::Parse("0.0.0.0/0")->Contains(Ip("::1")));
  // A bare address is a single host.
  EXPECT_TRUE(Cidr::Parse("127.0.0.1")->Contains(Ip("127.0.0.1")));
  EXPECT_FALSE(Cidr::Parse("127.0.0.1")->Contains(Ip("127.0.0.2")));
}

TEST(CidrTest, RejectsBadBlocks) {
  for (std::string_view bad : {"10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "10.1.0.0/8", "::/129",
                               "nonsense/8", "10.0.0.0/8x"}) {
    EXPECT_FALSE(Cidr::Parse(bad).has_value()) << bad;
  }
}

TEST(EndpointTest, ParsesListenForms) {
  EXPECT_EQ(Endpoint::Parse("0.0.0.0:8080")->ToString(), "0.0.0.0:8080");
  EXPECT_EQ(Endpoint::Parse(":9090")->ToString(), "0.0.0.0:9090");
  EXPECT_EQ(Endpoint::Parse("[::1]:0")->ToString(), "[::1]:0");
  EXPECT_EQ(Endpoint::Parse("localhost:1")->ToString(), "127.0.0.1:1");
  for (std::string_view bad :
       {"8080", "1.2.3.4:70000", "::1:80", "[::1]80", "host:80", "1.2.3.4:"}) {
    EXPECT_FALSE(Endpoint::Parse(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace sluice::net

namespace sluice::net {
namespace {

// The hand-written IPv4 formatter against inet_ntop, over every octet value in every
// position and random addresses.
TEST(IpAddressTest, FormatsEveryIpv4AddressAsInetNtopDoes) {
  auto check = [](uint32_t v) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(v);
    char expected[INET_ADDRSTRLEN];
    ASSERT_NE(inet_ntop(AF_INET, &sa.sin_addr, expected, sizeof(expected)), nullptr);
    const std::optional<IpAddress> ip =
        IpAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&sa));
    ASSERT_TRUE(ip.has_value());
    char out[IpAddress::kMaxTextLength];
    const size_t n = ip->Format(out);
    EXPECT_EQ(std::string(out, n), expected);
    EXPECT_EQ(out[n], '\0');
  };
  for (uint32_t octet = 0; octet < 256; ++octet) {
    for (int shift = 0; shift < 32; shift += 8) {
      check(octet << shift);                                      // the others 0
      check(octet << shift | (0xffffffffu & ~(0xffu << shift)));  // the others 255
    }
  }
  uint64_t state = 88172645463325252ull;
  for (int i = 0; i < 100000; ++i) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    check(static_cast<uint32_t>(state));
  }
}

}  // namespace
}  // namespace sluice::net
