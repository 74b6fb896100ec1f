#include "api/decision_request.h"

#include "http/ascii.h"

namespace sluice::api {

const http::Request& DecisionRequestBuilder::FromDescriptors(
    std::span<const Descriptor> descriptors) {
  request_ = http::Request{};
  headers_.clear();
  query_.clear();
  for (const Descriptor& d : descriptors) {
    switch (d.kind) {
      case config::KeyPartKind::kIp:
        // Checked by the parser; a value that does not parse leaves the client unnamed.
        if (const std::optional<net::IpAddress> ip = net::IpAddress::Parse(d.value)) {
          peer_ = *ip;
          request_.peer = &peer_;
        }
        break;
      case config::KeyPartKind::kMethod:
        request_.method = d.value;
        break;
      case config::KeyPartKind::kPath:
        // A path, as a request's ends at its query: anything from a '?' on is not part
        // of it (query:NAME descriptors carry parameters).
        request_.target = d.value;
        request_.path = http::CanonicalPath(d.value.substr(0, d.value.find('?')), path_scratch_);
        break;
      case config::KeyPartKind::kHost:
        request_.host = http::HostWithoutPort(d.value);
        break;
      case config::KeyPartKind::kAuthorization:
        headers_.push_back(http::Header{"Authorization", d.value});
        break;
      case config::KeyPartKind::kHeader:
        headers_.push_back(http::Header{d.name, d.value});
        break;
      case config::KeyPartKind::kQuery:
        // As a query string would carry it: the gate reads parameters from one. An '&'
        // in a value is written as a request would have to write it (%26), so both
        // key the same client.
        if (!query_.empty()) query_ += '&';
        query_.append(d.name);
        query_ += '=';
        for (const char c : d.value) {
          if (c == '&') {
            query_ += "%26";
          } else {
            query_ += c;
          }
        }
        break;
    }
  }
  request_.query = query_;
  request_.headers = headers_;
  return request_;
}

const http::Request& DecisionRequestBuilder::FromForwardAuth(const http::Request& auth) {
  request_ = http::Request{};
  // Traefik's X-Forwarded-* spelling wins over nginx's X-Original-* when a call has
  // both; of one name, the first field counts.
  std::optional<std::string_view> method, original_method, uri, original_uri, host;
  const auto first = [](std::optional<std::string_view>& slot, std::string_view value) {
    if (!slot) slot = http::TrimOws(value);
  };
  for (const http::Header& h : auth.headers) {
    if (http::EqualsIgnoreCase(h.name, "x-forwarded-method")) {
      first(method, h.value);
    } else if (http::EqualsIgnoreCase(h.name, "x-original-method")) {
      first(original_method, h.value);
    } else if (http::EqualsIgnoreCase(h.name, "x-forwarded-uri")) {
      first(uri, h.value);
    } else if (http::EqualsIgnoreCase(h.name, "x-original-uri")) {
      first(original_uri, h.value);
    } else if (http::EqualsIgnoreCase(h.name, "x-forwarded-host")) {
      first(host, h.value);
    }
  }
  if (!method) method = original_method;
  if (!uri) uri = original_uri;
  if (method) request_.method = *method;
  if (uri) {
    request_.target = *uri;
    const size_t question = uri->find('?');
    request_.path = http::CanonicalPath(uri->substr(0, question), path_scratch_);
    if (question != std::string_view::npos) request_.query = uri->substr(question + 1);
  }
  request_.host = host ? http::HostWithoutPort(*host) : auth.host;
  request_.version_minor = auth.version_minor;
  request_.headers = auth.headers;
  request_.request_id = auth.request_id;
  request_.peer = auth.peer;
  request_.peer_text = auth.peer_text;
  return request_;
}

}  // namespace sluice::api
