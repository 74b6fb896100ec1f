#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace sluice::net {
namespace {

// OpenSSL's queued errors as one line, oldest first; the queue is left empty.
std::string OpenSslErrors() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(code, text, sizeof(text));
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// ALPN: the server speaks HTTP/1.1 only. A client offering h2 alone gets no
// protocol selected, and then speaks HTTP/1.1 as without ALPN.
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* out_length, const unsigned char* in,
               unsigned int in_length, void*) {
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, out_length, kHttp11, sizeof(kHttp11), in, in_length) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace

std::unique_ptr<TlsServerContext> TlsServerContext::Load(const std::string& cert_file,
                                                         const std::string& key_file,
                                                         std::string* error) {
  ERR_clear_error();
  SSL_CTX* context = SSL_CTX_new(TLS_server_method());
  if (context == nullptr) {
    *error = "tls: " + OpenSslErrors();
    return nullptr;
  }
  std::unique_ptr<TlsServerContext> result(new TlsServerContext(context));
  SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
  // The write buffer moves (the connection's output string grows and is compacted)
  // between a write that would block and its retry; partial writes let a large
  // response go out record by record.
  SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(context, cert_file.c_str()) != 1) {
    *error = "tls.cert_file " + cert_file + ": " + OpenSslErrors();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(context, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // A key of another certificate fails here ("key values mismatch").
    *error =
        "tls.key_file " + key_file + " (for tls.cert_file " + cert_file + "): " + OpenSslErrors();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(context) != 1) {
    *error = "tls: the key in " + key_file + " does not match the certificate in " + cert_file +
             ": " + OpenSslErrors();
    return nullptr;
  }
  SSL_CTX_set_alpn_select_cb(context, &SelectAlpn, nullptr);
  return result;
}

TlsServerContext::~TlsServerContext() { SSL_CTX_free(context_); }

SSL* TlsServerContext::NewSession(int fd) const {
  SSL* session = SSL_new(context_);
  if (session == nullptr) return nullptr;
  if (SSL_set_fd(session, fd) != 1) {
    SSL_free(session);
    return nullptr;
  }
  SSL_set_accept_state(session);
  return session;
}

const TlsClientContext& TlsClientContext::Shared() {
  static const TlsClientContext* const context = new TlsClientContext();  // never freed
  return *context;
}

TlsClientContext::TlsClientContext() : context_(SSL_CTX_new(TLS_client_method())) {
  if (context_ == nullptr) return;
  SSL_CTX_set_min_proto_version(context_, TLS1_2_VERSION);
  SSL_CTX_set_mode(context_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_verify(context_, SSL_VERIFY_NONE, nullptr);
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(context_, kHttp11, sizeof(kHttp11));
}

TlsClientContext::~TlsClientContext() { SSL_CTX_free(context_); }

SSL* TlsClientContext::NewSession(int fd) const {
  if (context_ == nullptr) return nullptr;
  SSL* session = SSL_new(context_);
  if (session == nullptr) return nullptr;
  if (SSL_set_fd(session, fd) != 1) {
    SSL_free(session);
    return nullptr;
  }
  SSL_set_connect_state(session);
  return session;
}

namespace {

// After a TLS call that moved nothing: what the socket call would have said.
ssize_t AsSocketResult(SSL* session, int result, bool reading, TlsWants& wants) {
  switch (SSL_get_error(session, result)) {
    case SSL_ERROR_WANT_READ:
      wants.read = true;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_WANT_WRITE:
      wants.write = true;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN:  // close_notify
      return 0;
    case SSL_ERROR_SYSCALL:
      wants.fatal = true;
      if (reading && errno == 0) return 0;  // the peer closed without close_notify
      if (errno == 0) errno = EPIPE;
      return -1;
    default:  // a handshake failure, a bad record
      wants.fatal = true;
      errno = reading ? EPROTO : EPIPE;
      return -1;
  }
}

}  // namespace

ssize_t TlsRead(SSL* session, char* buffer, size_t length, TlsWants& wants) {
  wants = {};
  ERR_clear_error();
  errno = 0;
  const int n = SSL_read(session, buffer, static_cast<int>(std::min<size_t>(length, INT_MAX)));
  return n > 0 ? n : AsSocketResult(session, n, true, wants);
}

ssize_t TlsWrite(SSL* session, const char* buffer, size_t length, TlsWants& wants) {
  wants = {};
  ERR_clear_error();
  errno = 0;
  const int n = SSL_write(session, buffer, static_cast<int>(std::min<size_t>(length, INT_MAX)));
  return n > 0 ? n : AsSocketResult(session, n, false, wants);
}

}  // namespace sluice::net
