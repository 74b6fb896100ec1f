// IP addresses and CIDR blocks: the client identity of a socket peer or of an
// X-Forwarded-For entry, and the access and trusted-proxy lists.
//
// IPv4 addresses are kept as IPv4-mapped IPv6 (::ffff:a.b.c.d) so one 16-byte form
// and one prefix comparison serve both families; "10.0.0.0/8" becomes
// ::ffff:10.0.0.0/104 and matches a peer that arrives as 10.1.2.3 on either an IPv4
// or a dual-stack socket.
//
// Thread-safety: plain values; a const CidrList may be read from any thread.
#ifndef SLUICE_NET_ADDRESS_H_
#define SLUICE_NET_ADDRESS_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::net {

class IpAddress {
 public:
  IpAddress() = default;

  // Accepts dotted IPv4 ("10.1.2.3") and IPv6 text ("::1", "2001:db8::1"); IPv6
  // zone ids and surrounding brackets are refused.
  static std::optional<IpAddress> Parse(std::string_view text);
  // From a socket address of family AF_INET or AF_INET6.
  static std::optional<IpAddress> FromSockaddr(const sockaddr* address);

  bool is_v4() const;
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  // Canonical text: dotted quad for IPv4 (mapped included), RFC 5952 for IPv6.
  // Writes into `out` (at least kMaxTextLength bytes) and returns the length.
  static constexpr size_t kMaxTextLength = 46;
  size_t Format(char* out) const;
  std::string ToString() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

class Cidr {
 public:
  // "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). Host bits
  // set below the prefix ("10.1.0.0/8") are refused, as they usually mean a typo.
  static std::optional<Cidr> Parse(std::string_view text);
  bool Contains(const IpAddress& address) const;
  std::string ToString() const;

 private:
  IpAddress network_;
  int prefix_bits_ = 0;  // of the 128-bit form
};

class CidrList {
 public:
  CidrList() = default;
  explicit CidrList(std::vector<Cidr> blocks) : blocks_(std::move(blocks)) {}
  bool Contains(const IpAddress& address) const;
  bool empty() const { return blocks_.empty(); }
  size_t size() const { return blocks_.size(); }

 private:
  std::vector<Cidr> blocks_;
};

// "host:port" as written in `listen`: "0.0.0.0:8080", "127.0.0.1:0", "[::1]:9090",
// ":8080" (all IPv4 interfaces). Port 0 asks the kernel for a free port.
struct Endpoint {
  IpAddress address;
  uint16_t port = 0;
  static std::optional<Endpoint> Parse(std::string_view text);
  std::string ToString() const;
  // Fills `out` with an AF_INET address for IPv4 and AF_INET6 otherwise.
  socklen_t ToSockaddr(sockaddr_storage* out) const;
};

}  // namespace sluice::net

#endif  // SLUICE_NET_ADDRESS_H_
