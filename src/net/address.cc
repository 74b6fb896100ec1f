#include "net/address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace sluice::net {
namespace {

constexpr std::array<uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// inet_pton needs a NUL-terminated string; addresses are short, so copy to the stack.
bool CopyToCString(std::string_view text, char (&buffer)[64]) {
  if (text.empty() || text.size() >= sizeof(buffer)) return false;
  // inet_pton would stop at a NUL and accept whatever followed it.
  if (text.find('\0') != std::string_view::npos) return false;
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  return true;
}

}  // namespace

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  char buffer[64];
  if (!CopyToCString(text, buffer)) return std::nullopt;
  IpAddress address;
  in_addr v4;
  if (inet_pton(AF_INET, buffer, &v4) == 1) {
    std::memcpy(address.bytes_.data(), kV4MappedPrefix.data(), kV4MappedPrefix.size());
    std::memcpy(address.bytes_.data() + 12, &v4, 4);
    return address;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, buffer, &v6) == 1) {
    std::memcpy(address.bytes_.data(), &v6, 16);
    return address;
  }
  return std::nullopt;
}

std::optional<IpAddress> IpAddress::FromSockaddr(const sockaddr* address) {
  IpAddress result;
  if (address->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    std::memcpy(result.bytes_.data(), kV4MappedPrefix.data(), kV4MappedPrefix.size());
    std::memcpy(result.bytes_.data() + 12, &v4->sin_addr, 4);
    return result;
  }
  if (address->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
    std::memcpy(result.bytes_.data(), &v6->sin6_addr, 16);
    return result;
  }
  return std::nullopt;
}

bool IpAddress::is_v4() const {
  return std::memcmp(bytes_.data(), kV4MappedPrefix.data(), kV4MappedPrefix.size()) == 0;
}

size_t IpAddress::Format(char* out) const {
  if (is_v4()) {
    // By hand: inet_ntop formats through sprintf, and this runs for every request (the
    // `ip` key, X-Forwarded-For).
    char* p = out;
    for (int i = 12; i < 16; ++i) {
      const unsigned octet = bytes_[i];
      if (octet >= 100) *p++ = static_cast<char>('0' + octet / 100);
      if (octet >= 10) *p++ = static_cast<char>('0' + octet / 10 % 10);
      *p++ = static_cast<char>('0' + octet % 10);
      if (i < 15) *p++ = '.';
    }
    *p = '\0';
    return static_cast<size_t>(p - out);
  }
  const char* written = inet_ntop(AF_INET6, bytes_.data(), out, kMaxTextLength);
  return written == nullptr ? 0 : std::strlen(out);
}

std::string IpAddress::ToString() const {
  char buffer[kMaxTextLength];
  return std::string(buffer, Format(buffer));
}

std::optional<Cidr> Cidr::Parse(std::string_view text) {
  const size_t slash = text.find('/');
  const std::optional<IpAddress> address = IpAddress::Parse(text.substr(0, slash));
  if (!address) return std::nullopt;
  const int max_bits = address->is_v4() ? 32 : 128;
  int bits = max_bits;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), bits);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || bits < 0 ||
        bits > max_bits) {
      return std::nullopt;
    }
  }
  Cidr cidr;
  cidr.network_ = *address;
  cidr.prefix_bits_ = address->is_v4() ? bits + 96 : bits;
  // Host bits must be zero.
  const auto& b = address->bytes();
  for (int i = cidr.prefix_bits_; i < 128; ++i) {
    if (b[i / 8] & (0x80 >> (i % 8))) return std::nullopt;
  }
  return cidr;
}

bool Cidr::Contains(const IpAddress& address) const {
  const auto& a = address.bytes();
  const auto& n = network_.bytes();
  const int whole = prefix_bits_ / 8;
  if (std::memcmp(a.data(), n.data(), whole) != 0) return false;
  const int rest = prefix_bits_ % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (n[whole] & mask);
}

std::string Cidr::ToString() const {
  const int bits = network_.is_v4() ? prefix_bits_ - 96 : prefix_bits_;
  return network_.ToString() + "/" + std::to_string(bits);
}

bool CidrList::Contains(const IpAddress& address) const {
  for (const Cidr& block : blocks_) {
    if (block.Contains(address)) return true;
  }
  return false;
}

std::optional<Endpoint> Endpoint::Parse(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs []
  }
  Endpoint endpoint;
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  const std::optional<IpAddress> address = IpAddress::Parse(host);
  if (!address) return std::nullopt;
  endpoint.address = *address;
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return std::nullopt;
  }
  endpoint.port = static_cast<uint16_t>(value);
  return endpoint;
}

std::string Endpoint::ToString() const {
  const std::string host = address.ToString();
  return (address.is_v4() ? host : "[" + host + "]") + ":" + std::to_string(port);
}

socklen_t Endpoint::ToSockaddr(sockaddr_storage* out) const {
  std::memset(out, 0, sizeof(*out));
  if (address.is_v4()) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(out);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    std::memcpy(&v4->sin_addr, address.bytes().data() + 12, 4);
    return sizeof(sockaddr_in);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(port);
  std::memcpy(&v6->sin6_addr, address.bytes().data(), 16);
  return sizeof(sockaddr_in6);
}

}  // namespace sluice::net
