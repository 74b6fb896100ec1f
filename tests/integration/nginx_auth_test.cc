// sluice as nginx's auth_request service, end to end: a real nginx (Debian's, started
// by the test on a free loopback port) asks GET /v1/auth about every request before
// serving it, and turns sluice's answer into the client's: the request itself, or a
// 429 with Retry-After and the RateLimit fields. The nginx config is the one
// docs/decision-api.md shows, with the paths and ports filled in.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "integration/harness.h"

namespace sluice::integration {
namespace {

constexpr const char* kNginx = "/usr/sbin/nginx";

// The part of docs/decision-api.md's config that matters, with @DIR@, @PORT@ and
// @SLUICE@ to fill in.
constexpr std::string_view kNginxConfig = R"(daemon off;
master_process off;
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path @DIR@/tmp;
  proxy_temp_path @DIR@/tmp;
  fastcgi_temp_path @DIR@/tmp;
  uwsgi_temp_path @DIR@/tmp;
  scgi_temp_path @DIR@/tmp;

  upstream sluice {
    server 127.0.0.1:@SLUICE@;
    keepalive 8;
  }

  server {
    listen 127.0.0.1:@PORT@;
    root @DIR@/www;

    location / {
      auth_request /_sluice;
      # nginx passes on only 2xx, 401 and 403 from auth_request: sluice answers a
      # refusal with 403 (refuse_status) and says in X-Sluice-Decision what it was.
      auth_request_set $sluice_decision $upstream_http_x_sluice_decision;
      auth_request_set $sluice_retry_after $upstream_http_retry_after;
      auth_request_set $sluice_ratelimit $upstream_http_ratelimit;
      auth_request_set $sluice_ratelimit_policy $upstream_http_ratelimit_policy;
      add_header RateLimit $sluice_ratelimit always;
      add_header RateLimit-Policy $sluice_ratelimit_policy always;
      error_page 403 = @sluice_refused;
      try_files /ok.txt =404;
    }

    location = /_sluice {
      internal;
      proxy_pass http://sluice/v1/auth?refuse_status=403;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }

    location @sluice_refused {
      default_type application/json;
      if ($sluice_decision = limited) {
        add_header Retry-After $sluice_retry_after always;
        add_header RateLimit $sluice_ratelimit always;
        add_header RateLimit-Policy $sluice_ratelimit_policy always;
        return 429 '{"error":"rate_limited"}\n';
      }
      return 403 '{"error":"forbidden"}\n';
    }
  }
}
)";

std::string Fill(std::string text, std::string_view name, std::string_view value) {
  for (size_t at; (at = text.find(name)) != std::string::npos;)
    text.replace(at, name.size(), value);
  return text;
}

// A port the kernel had free a moment ago.
uint16_t FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

// nginx in the foreground (one process), stopped and reaped when destroyed.
class NginxProcess {
 public:
  NginxProcess(const TempDir& dir, uint16_t sluice_port) {
    port_ = FreePort();
    mkdir(dir.File("tmp").c_str(), 0700);
    mkdir(dir.File("www").c_str(), 0700);
    WriteFileText(dir.File("www/ok.txt"), "ok from the service\n");
    std::string config = Fill(std::string(kNginxConfig), "@DIR@", dir.path());
    config = Fill(config, "@PORT@", std::to_string(port_));
    config = Fill(config, "@SLUICE@", std::to_string(sluice_port));
    WriteFileText(dir.File("nginx.conf"), config);
    const std::string conf = dir.File("nginx.conf"), error_log = dir.File("error.log");
    pid_ = fork();
    if (pid_ == 0) {
      execl(kNginx, kNginx, "-p", dir.path().c_str(), "-c", conf.c_str(), "-e", error_log.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    log_path_ = error_log;
    started_ = WaitFor([&] { return HttpClient(port_).connected(); }, Millis(5000));
  }
  ~NginxProcess() {
    if (pid_ <= 0) return;
    kill(pid_, SIGQUIT);
    if (!WaitFor([&] { return waitpid(pid_, nullptr, WNOHANG) == pid_; }, Millis(3000))) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool started() const { return started_; }
  uint16_t port() const { return port_; }
  std::string Log() const { return ReadFileText(log_path_); }

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  bool started_ = false;
  std::string log_path_;
};

TEST(NginxAuthRequestTest, NginxServesAllowedRequestsAndAnswersLimitedOnesWith429) {
  ASSERT_EQ(access(kNginx, X_OK), 0) << kNginx << " missing: scripts/install-deps.sh installs it";
  // nginx connects from 127.0.0.1: a trusted proxy, so sluice keys the client nginx
  // names in X-Forwarded-For. Three requests an hour per client address.
  SluiceProcess sluice(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
workers: 1
access_log: {enabled: false}
clients: {trusted_proxies: ["127.0.0.1/32"]}
access: {deny: ["127.0.0.9/32"]}
rules:
  - name: per-client
    key: [ip]
    algorithm: sliding_window_counter
    limit: 3
    period: 1h
)");
  ASSERT_TRUE(sluice.started()) << sluice.error();
  TempDir dir;
  NginxProcess nginx(dir, sluice.port());
  ASSERT_TRUE(nginx.started()) << nginx.Log();

  for (int i = 1; i <= 4; ++i) {
    const HttpResponse r = Fetch(nginx.port(), "GET", "/orders?page=2", {}, {}, "127.0.0.2");
    std::string error;
    const auto limit = ParseRateLimitField(r.Header("RateLimit").value_or(""), &error);
    ASSERT_TRUE(limit) << error << "\n" << r.Describe() << nginx.Log();
    EXPECT_EQ((*limit)[0].policy, "per-client");
    EXPECT_EQ((*limit)[0].Param("r"), std::max(0, 3 - i));
    EXPECT_TRUE(r.Header("RateLimit-Policy")) << r.Describe();
    if (i <= 3) {
      EXPECT_EQ(r.status, 200) << r.Describe() << nginx.Log();
      EXPECT_EQ(r.body, "ok from the service\n");
      EXPECT_FALSE(r.Header("Retry-After"));
    } else {
      EXPECT_EQ(r.status, 429) << r.Describe() << nginx.Log();
      EXPECT_EQ(r.body, "{\"error\":\"rate_limited\"}\n");
      ASSERT_TRUE(r.Header("Retry-After")) << r.Describe();
      EXPECT_GT(std::stoll(*r.Header("Retry-After")), 0);
    }
  }
  // Another client (another source address, so another X-Forwarded-For) is not
  // limited; a deny-listed one is refused with 403.
  const HttpResponse other = Fetch(nginx.port(), "GET", "/orders", {}, {}, "127.0.0.3");
  EXPECT_EQ(other.status, 200) << other.Describe();
  const HttpResponse denied = Fetch(nginx.port(), "GET", "/orders", {}, {}, "127.0.0.9");
  EXPECT_EQ(denied.status, 403) << denied.Describe();
  EXPECT_EQ(denied.body, "{\"error\":\"forbidden\"}\n");
}

}  // namespace
}  // namespace sluice::integration
