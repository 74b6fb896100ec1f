// Addresses, CIDR blocks, endpoints and the client identity behind proxies.
#include <arpa/inet.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_targets.h"
#include "fuzz/fuzz_util.h"
#include "gate/gate.h"
#include "http/server_connection.h"
#include "net/address.h"

namespace sluice::fuzz {
namespace {

void CheckParsers(std::string_view text) {
  if (const std::optional<net::IpAddress> address = net::IpAddress::Parse(text)) {
    char buffer[net::IpAddress::kMaxTextLength];
    const size_t length = address->Format(buffer);
    Require(length > 0 && length < net::IpAddress::kMaxTextLength, "an address formats");
    const std::string_view formatted(buffer, length);
    Require(address->ToString() == formatted, "ToString is Format");
    Require(net::IpAddress::Parse(formatted) == address, "Format(Parse(x)) parses back");
  }
  if (const std::optional<net::Cidr> cidr = net::Cidr::Parse(text)) {
    const std::string formatted = cidr->ToString();
    const std::optional<net::Cidr> again = net::Cidr::Parse(formatted);
    Require(again.has_value() && again->ToString() == formatted, "a CIDR block round-trips");
    const std::optional<net::IpAddress> network =
        net::IpAddress::Parse(std::string_view(formatted).substr(0, formatted.find('/')));
    Require(network.has_value() && cidr->Contains(*network) && again->Contains(*network),
            "a block contains its network address");
    const std::optional<net::IpAddress> written =
        net::IpAddress::Parse(text.substr(0, text.find('/')));
    Require(written.has_value() && cidr->Contains(*written), "a block contains what was written");
  }
  if (const std::optional<net::Endpoint> endpoint = net::Endpoint::Parse(text)) {
    const std::optional<net::Endpoint> again = net::Endpoint::Parse(endpoint->ToString());
    Require(
        again.has_value() && again->address == endpoint->address && again->port == endpoint->port,
        "an endpoint round-trips");
    sockaddr_storage storage;
    endpoint->ToSockaddr(&storage);
    const std::optional<net::IpAddress> from =
        net::IpAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&storage));
    Require(from == endpoint->address, "an endpoint's sockaddr holds its address");
    const uint16_t port = storage.ss_family == AF_INET
                              ? ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port)
                              : ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
    Require(port == endpoint->port, "an endpoint's sockaddr holds its port");
  }
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether `address` is what some X-Forwarded-For element names, in any of the forms
// proxies write ("a", "a:port", "[v6]", "[v6]:port").
bool NamedInForwardedFor(const std::vector<http::Header>& headers, const net::IpAddress& address) {
  for (const http::Header& header : headers) {
    if (!EqualsIgnoreCase(header.name, "x-forwarded-for")) continue;
    std::string_view list = header.value;
    while (true) {
      const size_t comma = list.find(',');
      const std::string_view element = Trim(list.substr(0, comma));
      std::vector<std::string_view> forms = {element};
      if (element.starts_with('[') && element.find(']') != std::string_view::npos) {
        forms.push_back(element.substr(1, element.find(']') - 1));
      }
      forms.push_back(element.substr(0, element.find(':')));
      for (std::string_view form : forms) {
        if (net::IpAddress::Parse(form) == address) return true;
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  return false;
}

net::IpAddress Resolve(const net::CidrList& trusted, const net::IpAddress& peer,
                       const std::vector<http::Header>& headers) {
  http::Request request;
  request.method = "GET";
  request.target = request.path = "/";
  request.headers = headers;
  request.peer = &peer;
  return gate::ResolveClientIp(trusted, request);
}

}  // namespace

int AddressOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> lines;
  for (size_t start = 0;;) {
    const size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  for (std::string_view line : lines) CheckParsers(line);

  static const net::CidrList kTrusted = [] {
    std::vector<net::Cidr> blocks;
    for (const char* block :
         {"10.0.0.0/8", "192.168.0.0/16", "127.0.0.1", "::1", "fd00::/8", "2001:db8::/32"}) {
      blocks.push_back(*net::Cidr::Parse(block));
    }
    return net::CidrList(std::move(blocks));
  }();
  static const char* const kPeers[] = {"10.1.2.3",    "127.0.0.1",   "fd00::5",
                                       "203.0.113.7", "2001:db9::1", "::ffff:192.168.1.1"};
  // The first line is the peer: an address, or else one of kPeers.
  std::optional<net::IpAddress> peer = net::IpAddress::Parse(lines[0]);
  if (!peer) {
    peer = net::IpAddress::Parse(kPeers[(lines[0].empty() ? 0 : lines[0][0] & 0xff) % 6]);
  }
  // The other lines are header fields: "Name: value", or else an X-Forwarded-For value.
  std::vector<http::Header> headers;
  for (size_t i = 1; i < lines.size() && headers.size() < 100; ++i) {
    const size_t colon = lines[i].find(": ");
    if (colon != std::string_view::npos && colon > 0) {
      headers.push_back({lines[i].substr(0, colon), lines[i].substr(colon + 2)});
    } else {
      headers.push_back({"X-Forwarded-For", lines[i]});
    }
  }

  const net::IpAddress client = Resolve(kTrusted, *peer, headers);
  const bool peer_trusted = kTrusted.Contains(*peer);
  if (!peer_trusted) Require(client == *peer, "an untrusted peer is the client");
  Require(Resolve(net::CidrList(), *peer, headers) == *peer,
          "with no trusted proxies the peer is the client");
  if (client != *peer) {
    Require(NamedInForwardedFor(headers, client), "the client is named in X-Forwarded-For");
  }

  // An untrusted hop appended by the nearest (trusted) proxy is the client.
  const net::IpAddress untrusted = *net::IpAddress::Parse("198.51.100.77");
  std::vector<http::Header> more = headers;
  more.push_back({"x-forwarded-for", " 198.51.100.77 "});
  Require(Resolve(kTrusted, *peer, more) == (peer_trusted ? untrusted : *peer),
          "an untrusted hop on the right is the client");
  // Nothing left of an untrusted client is believed.
  if (client != *peer && !kTrusted.Contains(client)) {
    more = headers;
    more.insert(more.begin(), {"X-Forwarded-For", "198.51.100.88"});
    Require(Resolve(kTrusted, *peer, more) == client, "hops left of the client do not matter");
  }
  return 0;
}

}  // namespace sluice::fuzz
