// TLS termination on `listen` (issue 5): the real binary with a self-signed
// certificate made by the test (openssl req), spoken to by real TLS clients (curl and
// openssl s_client), in decision mode and in gateway mode in front of a test upstream.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <string>

#include "integration/harness.h"
#include "upstream/upstream_process.h"

namespace sluice::integration {
namespace {

// Runs a shell command (bounded by `timeout` through coreutils' timeout) and returns
// its exit status and standard output.
struct ShellResult {
  int status = -1;
  std::string out;
};
ShellResult Shell(const std::string& command, int timeout_seconds = 20) {
  ShellResult result;
  const std::string bounded =
      fmt::format("timeout {} sh -c '{}' 2>/dev/null", timeout_seconds, command);
  FILE* pipe = popen(bounded.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// A key and a self-signed certificate for localhost and 127.0.0.1 in `dir`.
bool MakeCertificate(const TempDir& dir) {
  const ShellResult r = Shell(fmt::format(
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout {} -out {} -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1",
      dir.File("key.pem"), dir.File("cert.pem")));
  return r.status == 0;
}

std::string TlsConfig(const TempDir& certs, std::string_view rest, int limit = 3) {
  return fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
workers: 1
tls: {{cert_file: "{}", key_file: "{}"}}
access_log: {{enabled: false}}
rules:
  - name: per-ip
    match: {{path_prefix: "/"}}
    key: [ip]
    algorithm: fixed_window
    limit: {}
    period: 1m
{})",
                     certs.File("cert.pem"), certs.File("key.pem"), limit, rest);
}

// Routes and one upstream group sending everything to the plain server at `port`,
// bodies up to 100 MB.
std::string RouteAllTo(uint16_t port) {
  return fmt::format(R"(http: {{max_body_bytes: 104857600}}
routes:
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    servers: [{{address: "127.0.0.1:{}"}}]
)",
                     port);
}

// 20 MB down, and 20 MB up with Content-Length and chunked, by `curl` (a command
// with its options) against the gateway at `base`: sizes and checksums.
void ExpectStreamsBothWays(const std::string& curl, const std::string& base,
                           const TempDir& scratch) {
  EXPECT_EQ(Shell(curl + " -o /dev/null -w %{size_download} " + base + "/bytes/20000000").out,
            "20000000");
  const std::string file = scratch.File("up.bin");
  ASSERT_EQ(Shell(fmt::format("head -c 20000000 /dev/urandom > {}", file)).status, 0);
  const std::string plain =
      Shell(fmt::format("{} -X POST --data-binary @{} {}/upload", curl, file, base)).out;
  const std::string chunked = Shell(fmt::format("{} -X POST -H \"Transfer-Encoding: chunked\" "
                                                "--data-binary @{} {}/upload",
                                                curl, file, base))
                                  .out;
  EXPECT_EQ(plain.substr(0, 9), "20000000 ") << plain;
  EXPECT_EQ(plain, chunked);
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(MakeCertificate(certs_)) << "openssl req failed"; }
  std::string Curl(uint16_t, const std::string& args) {
    return Shell(fmt::format("curl -sS --cacert {} {} ", certs_.File("cert.pem"), args)).out;
  }
  TempDir certs_;
};

TEST_F(TlsTest, DecisionModeOverTlsWithKeepAliveAndLimits) {
  SluiceProcess sluice(TlsConfig(certs_, ""));
  ASSERT_TRUE(sluice.started()) << sluice.error();
  const std::string url = fmt::format("https://localhost:{}/x", sluice.port());
  // Four requests on one connection: the certificate verifies, the connection is
  // reused (one connect), and the fourth is over the limit of 3.
  const std::string out =
      Curl(sluice.port(),
           fmt::format(
               "-o /dev/null -w \"%{{http_code}} %{{num_connects}} "
               "%{{ssl_verify_result}}\\n\" {0} -o /dev/null {0} -o /dev/null {0} -o /dev/null {0}",
               url));
  EXPECT_EQ(out, "200 1 0\n200 0 0\n200 0 0\n429 0 0\n");
  // The RateLimit fields come over TLS as over plain HTTP.
  const std::string head =
      Curl(sluice.port(), fmt::format("-D - -o /dev/null https://127.0.0.1:{}/y", sluice.port()));
  EXPECT_NE(head.find("RateLimit-Policy: \"per-ip\";q=3;w=60"), std::string::npos) << head;
}

TEST_F(TlsTest, OpenSslClientNegotiatesHttp11AndGetsAnAnswer) {
  SluiceProcess sluice(TlsConfig(certs_, ""));
  ASSERT_TRUE(sluice.started()) << sluice.error();
  // s_client with ALPN offering h2 and http/1.1: sluice picks http/1.1; the request
  // written on stdin is answered, and the session closes after `Connection: close`.
  const ShellResult r = Shell(fmt::format(
      "printf \"GET /z HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n\" | "
      "openssl s_client -connect 127.0.0.1:{} -servername localhost -alpn h2,http/1.1 "
      "-CAfile {} -verify_return_error -ign_eof",
      sluice.port(), certs_.File("cert.pem")));
  EXPECT_NE(r.out.find("ALPN protocol: http/1.1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Verify return code: 0 (ok)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("HTTP/1.1 200 OK"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Connection: close"), std::string::npos) << r.out;
}

TEST_F(TlsTest, PlainHttpOnTheTlsPortIsRefusedAndTheServerGoesOn) {
  SluiceProcess sluice(TlsConfig(certs_, ""));
  ASSERT_TRUE(sluice.started()) << sluice.error();
  HttpClient plain(sluice.port());
  ASSERT_TRUE(plain.connected());
  const HttpResponse response = plain.Get("/x");
  EXPECT_EQ(response.status, 0) << response.Describe();  // no HTTP answer, just a close
  const std::string out = Curl(sluice.port(), fmt::format("-o /dev/null -w %{{http_code}} "
                                                          "https://localhost:{}/x",
                                                          sluice.port()));
  EXPECT_EQ(out, "200");
}

TEST_F(TlsTest, AClientThatNeverStartsTheHandshakeIsClosedAtTheHeadTimeout) {
  SluiceProcess sluice(TlsConfig(certs_, "http: {header_timeout_ms: 300}\n"));
  ASSERT_TRUE(sluice.started()) << sluice.error();
  HttpClient silent(sluice.port());
  ASSERT_TRUE(silent.connected());
  // No 408 can go out before a handshake: the connection is just closed (it used to
  // stay open with the worker spinning on a write that waited for the handshake).
  std::string data;
  const HttpClient::CloseState state = silent.WaitClosed(Millis(3000), &data);
  EXPECT_TRUE(state == HttpClient::CloseState::kClosed || state == HttpClient::CloseState::kReset)
      << static_cast<int>(state) << " " << data;
  EXPECT_EQ(Curl(sluice.port(), fmt::format("-o /dev/null -w %{{http_code}} https://localhost:{}/x",
                                            sluice.port())),
            "200");
}

TEST_F(TlsTest, WrongKeyForTheCertificateStopsTheStartWithAClearError) {
  TempDir other;
  ASSERT_TRUE(MakeCertificate(other));
  const std::string config = fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
tls: {{cert_file: "{}", key_file: "{}"}}
)",
                                         certs_.File("cert.pem"), other.File("key.pem"));
  TempDir dir;
  ASSERT_TRUE(WriteFileText(dir.File("c.yaml"), config));
  const CommandResult r = RunSluice({"serve", "--config", dir.File("c.yaml")});
  ASSERT_TRUE(r.status.has_value());
  EXPECT_NE(r.status->code, 0);
  EXPECT_NE(r.err.find("tls.key_file " + other.File("key.pem")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("key values mismatch"), std::string::npos) << r.err;
}

TEST_F(TlsTest, GatewayOverTlsStreamsBothWaysAndSaysHttpsUpstream) {
  testing::UpstreamProcess upstream;
  ASSERT_TRUE(upstream.Start("a")) << upstream.error();
  SluiceProcess sluice(TlsConfig(certs_, RouteAllTo(upstream.port()), 1000));
  ASSERT_TRUE(sluice.started()) << sluice.error();
  const std::string base = fmt::format("https://localhost:{}", sluice.port());
  const std::string headers = Curl(sluice.port(), base + "/headers");
  EXPECT_NE(headers.find("X-Forwarded-Proto: https"), std::string::npos) << headers;
  ExpectStreamsBothWays("curl -sS --cacert " + certs_.File("cert.pem"), base, certs_);
}

TEST_F(TlsTest, GatewayReEncryptsToATlsUpstream) {
  testing::UpstreamProcess upstream;
  ASSERT_TRUE(upstream.Start("a")) << upstream.error();
  // inner: TLS on its listener, in front of the plain test upstream.
  SluiceProcess inner(TlsConfig(certs_, RouteAllTo(upstream.port()), 1000));
  ASSERT_TRUE(inner.started()) << inner.error();
  // outer: plain listener, TLS to inner (health checks too).
  SluiceProcess outer(fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
workers: 1
access_log: {{enabled: false}}
http: {{max_body_bytes: 104857600}}
routes:
  - {{path_prefix: "/", upstream: inner}}
upstreams:
  inner:
    tls: true
    servers: [{{address: "127.0.0.1:{}"}}]
    health_check: {{path: "/healthz", interval_ms: 100}}
)",
                                  inner.port()));
  ASSERT_TRUE(outer.started()) << outer.error();
  HttpClient c(outer.port());
  ASSERT_TRUE(c.connected());
  // Many requests on one client connection, over a pooled TLS connection upstream.
  for (int i = 0; i < 20; ++i) {
    const HttpResponse r = c.Get("/headers");
    ASSERT_EQ(r.status, 200) << r.Describe();
    EXPECT_NE(r.body.find("X-Forwarded-Proto: https"), std::string::npos) << r.body;
  }
  ExpectStreamsBothWays("curl -sS", fmt::format("http://127.0.0.1:{}", outer.port()), certs_);
  // The health checks over TLS pass: the server was never taken out.
  EXPECT_EQ(outer.Stderr().find("marked down"), std::string::npos) << outer.Stderr();
}

TEST_F(TlsTest, TlsToAPlainUpstreamFailsTheHandshakeWith502) {
  testing::UpstreamProcess upstream;
  ASSERT_TRUE(upstream.Start("a")) << upstream.error();
  SluiceProcess outer(fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
workers: 1
access_log: {{enabled: false}}
routes:
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    tls: true
    servers: [{{address: "127.0.0.1:{}"}}]
    timeouts: {{connect_ms: 1000}}
)",
                                  upstream.port()));
  ASSERT_TRUE(outer.started()) << outer.error();
  HttpClient c(outer.port());
  ASSERT_TRUE(c.connected());
  const HttpResponse r = c.Get("/x");
  EXPECT_TRUE(r.status == 502 || r.status == 504) << r.Describe();
  EXPECT_FALSE(r.Header("X-Upstream")) << r.Describe();
}

}  // namespace
}  // namespace sluice::integration
