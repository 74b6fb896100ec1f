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

#include <sys/types.h>

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

// The client side, for `upstreams.<name>.tls: true`: one context per process, TLS 1.2
// and up, ALPN "http/1.1". Like nginx's proxy_ssl_verify (off by default), the
// upstream's certificate is not verified: the upstreams are the operator's own
// servers, addressed by IP, and the point is encryption on the wire.
class TlsClientContext {
 public:
  // The process's context, made on first use.
  static const TlsClientContext& Shared();
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;
  // A client session on the connected, non-blocking socket `fd`; null on failure.
  SSL* NewSession(int fd) const;

 private:
  TlsClientContext();
  SSL_CTX* context_;
};

// What a TLS read or write needs before it can go on, beside the socket call's
// answer: the session may need input to write (a TLS 1.3 post-handshake message) or
// output room to read (the handshake's answer), and a fatal error ends the session
// without a close_notify.
struct TlsWants {
  bool read = false;
  bool write = false;
  bool fatal = false;
};

// SSL_read and SSL_write as recv and send would answer: bytes moved (> 0), 0 at the end
// of input (close_notify, or the peer closing without one), or -1 with errno (EAGAIN
// when the session waits on the socket, as `wants` says; EPROTO or EPIPE when fatal).
ssize_t TlsRead(SSL* session, char* buffer, size_t length, TlsWants& wants);
ssize_t TlsWrite(SSL* session, const char* buffer, size_t length, TlsWants& wants);

}  // namespace sluice::net

#endif  // SLUICE_NET_TLS_H_
