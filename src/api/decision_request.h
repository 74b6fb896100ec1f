// The request the gate evaluates when a decision API is asked about one it never saw:
// from a /v1/check query's descriptors, or from a forward-auth call (GET /v1/auth) in
// which a proxy describes the request it holds. The rules then match and key it exactly
// as they would the request itself, reaching sluice.
//
// Thread-safety: one builder per thread; a request it returns is valid until its next
// call.
#ifndef SLUICE_API_DECISION_REQUEST_H_
#define SLUICE_API_DECISION_REQUEST_H_

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/check_request.h"
#include "http/server_connection.h"
#include "net/address.h"

namespace sluice::api {

class DecisionRequestBuilder {
 public:
  // The request the descriptors describe: ip (the client; without it the access lists
  // are skipped and `ip` keys are missing), method, path (canonicalised as a request's
  // is), host, authorization (the whole field value, "Bearer t"), header:NAME and
  // query:NAME. A part not given is missing, as it would be from a request.
  const http::Request& FromDescriptors(std::span<const Descriptor> descriptors);

  // The original request of a forward-auth call `auth` (nginx auth_request, Traefik
  // forwardAuth, ...): its method from X-Forwarded-Method or X-Original-Method, its
  // target from X-Forwarded-Uri or X-Original-URI, its host from X-Forwarded-Host or
  // else the call's Host, and every field of the call as its fields (proxies pass the
  // original ones on). The client is the call's peer, the proxy, or, when that is a
  // trusted proxy, what X-Forwarded-For says: the gate resolves it as for any request.
  const http::Request& FromForwardAuth(const http::Request& auth);

 private:
  http::Request request_;
  net::IpAddress peer_;
  std::vector<http::Header> headers_;
  std::string query_;
  std::string path_scratch_;
};

}  // namespace sluice::api

#endif  // SLUICE_API_DECISION_REQUEST_H_
