// An http::Request for tests, built from strings the test owns: View() lends them to a
// Request the way the server connection's read buffer does.
#ifndef SLUICE_TESTS_TESTING_TEST_REQUEST_H_
#define SLUICE_TESTS_TESTING_TEST_REQUEST_H_

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/server_connection.h"
#include "net/address.h"

namespace sluice::testing {

// An address from its text; a test failure if it does not parse.
inline net::IpAddress Ip(std::string_view text) {
  const std::optional<net::IpAddress> address = net::IpAddress::Parse(text);
  EXPECT_TRUE(address.has_value()) << text;
  return address.value_or(net::IpAddress{});
}

class TestRequest {
 public:
  // `target` as sent: "/path?query" (or an absolute form).
  explicit TestRequest(std::string method = "GET", std::string_view target = "/")
      : method_(std::move(method)) {
    Target(target);
  }
  TestRequest& Method(std::string method) {
    method_ = std::move(method);
    return *this;
  }
  TestRequest& Target(std::string_view target) {
    const size_t question = target.find('?');
    path_ = std::string(target.substr(0, question));
    query_ = question == std::string_view::npos ? "" : std::string(target.substr(question + 1));
    has_query_ = question != std::string_view::npos;
    return *this;
  }
  TestRequest& Path(std::string path) {
    path_ = std::move(path);
    return *this;
  }
  TestRequest& Query(std::string query) {
    query_ = std::move(query);
    has_query_ = !query_.empty();
    return *this;
  }
  TestRequest& Header(std::string name, std::string value) {
    headers_.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  TestRequest& Peer(std::string_view peer) {
    peer_ = Ip(peer);
    return *this;
  }
  TestRequest& Http10() {
    version_minor_ = 0;
    return *this;
  }
  TestRequest& Id(std::string id) {
    id_ = std::move(id);
    return *this;
  }

  // Valid until the next View() or the end of this TestRequest.
  http::Request View() const {
    views_.clear();
    for (const auto& [name, value] : headers_) views_.push_back({name, value});
    target_ = has_query_ ? path_ + "?" + query_ : path_;
    http::Request request;
    request.method = method_;
    request.target = target_;
    request.path = path_;
    request.query = query_;
    request.version_minor = version_minor_;
    request.headers = views_;
    request.request_id = id_;
    request.peer = &peer_;
    // As the connection does it: the Host header without its port.
    if (const auto host = request.FindHeader("host")) request.host = http::HostWithoutPort(*host);
    return request;
  }

 private:
  std::string method_;
  std::string path_;
  std::string query_;
  bool has_query_ = false;
  std::vector<std::pair<std::string, std::string>> headers_;
  net::IpAddress peer_ = Ip("203.0.113.7");
  int version_minor_ = 1;
  std::string id_ = "req-1";
  mutable std::vector<http::Header> views_;
  mutable std::string target_;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_TESTING_TEST_REQUEST_H_
