// TLS termination on the client listener (`tls.cert_file` / `tls.key_file`): the
// OpenSSL server context every worker makes its connections' sessions from.
//
// One context per process, loaded at start: the certificate chain (PEM, leaf first)
// and its private key, checked to match. Protocols TLS 1.2 and 1.3 with OpenSSL's
// default cipher lists; ALPN offers only "http/1.1", since that is all the server
// speaks. Session tickets stay on (OpenSSL's default), so a returning client skips the
// full handshake. A new certificate takes a restart.
//
// Thread-safety: an SSL_CTX may be shared by threads once set up; NewSession is safe
// from any worker. Each SSL session belongs to its connection's thread.
#ifndef SLUICE_NET_TLS_H_
#define SLUICE_NET_TLS_H_

#include <memory>
#include <string>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace sluice::net {

class TlsServerContext {
 public:
  // Loads `cert_file` and `key_file`; null with `*error` set when that fails (the
  // message names the file and OpenSSL's reason).
  static std::unique_ptr<TlsServerContext> Load(const std::string& cert_file,
                                                const std::string& key_file, std::string* error);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // A server session on the accepted, non-blocking socket `fd` (the caller owns both;
  // free the session with SSL_free). Null when OpenSSL cannot make one.
  SSL* NewSession(int fd) const;

 private:
  explicit TlsServerContext(SSL_CTX* context) : context_(context) {}
  SSL_CTX* context_;
};

}  // namespace sluice::net

#endif  // SLUICE_NET_TLS_H_
