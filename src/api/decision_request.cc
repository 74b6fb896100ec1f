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
        request_.target = d.value;
        request_.path = http::CanonicalPath(d.value, path_scratch_);
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
  std::optional<std::string_view> method, uri, host;
  for (const http::Header& h : auth.headers) {
    if (!method && (http::EqualsIgnoreCase(h.name, "x-forwarded-method") ||
                    http::EqualsIgnoreCase(h.name, "x-original-method"))) {
      method = http::TrimOws(h.value);
    } else if (!uri && (http::EqualsIgnoreCase(h.name, "x-forwarded-uri") ||
                        http::EqualsIgnoreCase(h.name, "x-original-uri"))) {
      uri = http::TrimOws(h.value);
    } else if (!host && http::EqualsIgnoreCase(h.name, "x-forwarded-host")) {
      host = http::TrimOws(h.value);
    }
  }
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
