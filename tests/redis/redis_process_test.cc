// The harness itself, against real redis-server processes: the later Redis store tests
// rely on Stop/Start, Kill, Pause and the cluster helpers doing exactly what they say.
#include "redis/redis_process.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

namespace sluice::testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

Millis ElapsedSince(SteadyClock::time_point start) {
  return std::chrono::duration_cast<Millis>(SteadyClock::now() - start);
}

TEST(RedisProcessTest, StartsOnAFreeLoopbackPortAndStoresAKey) {
  RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  EXPECT_TRUE(redis.running());
  EXPECT_GT(redis.port(), 0);
  EXPECT_EQ(redis.address(), "127.0.0.1:" + std::to_string(redis.port()));

  RedisClient client(redis.port());
  ASSERT_TRUE(client.connected()) << client.error();
  EXPECT_TRUE(client.Command("PING").Is("PONG"));
  EXPECT_TRUE(client.Command("SET", "greeting", "hello").Is("OK"));
  EXPECT_TRUE(client.Command("GET", "greeting").Is("hello"));
  const RedisReply incr = client.Command("INCRBY", "counter", 5);
  EXPECT_EQ(incr.type, RedisReply::Type::kInteger) << incr.ToString();
  EXPECT_EQ(incr.integer, 5);
  EXPECT_TRUE(client.Command("GET", "missing").is_nil());
  EXPECT_TRUE(client.Command("NOSUCHCOMMAND").IsErrorStartingWith("ERR"));
  // A server error leaves the connection usable.
  EXPECT_TRUE(client.connected());
  EXPECT_NE(redis.Log().find("Ready to accept connections"), std::string::npos) << redis.Log();
}

TEST(RedisProcessTest, StopThenStartKeepsThePortAndLosesTheData) {
  RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  const int port = redis.port();
  {
    RedisClient client(port);
    ASSERT_TRUE(client.Command("SET", "k", "v").Is("OK"));
  }
  ASSERT_TRUE(redis.Stop()) << redis.error();
  EXPECT_FALSE(redis.running());
  EXPECT_EQ(redis.last_exit(), "exited with status 0");
  RedisClient refused(port, Millis(200));
  EXPECT_FALSE(refused.connected());

  ASSERT_TRUE(redis.Start()) << redis.error();
  EXPECT_EQ(redis.port(), port);
  RedisClient client(port);
  EXPECT_TRUE(client.Command("GET", "k").is_nil());
  EXPECT_EQ(client.Command("DBSIZE").integer, 0);
  EXPECT_FALSE(std::filesystem::exists(redis.dir() + "/dump.rdb"));
  EXPECT_NE(redis.Log().find("start #2"), std::string::npos);
}

TEST(RedisProcessTest, KillThenStartRecoversOnTheSamePort) {
  RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  RedisClient client(redis.port());
  ASSERT_TRUE(client.Command("SET", "k", "v").Is("OK"));

  ASSERT_TRUE(redis.Kill()) << redis.error();
  EXPECT_FALSE(redis.running());
  EXPECT_NE(redis.last_exit().find("signal 9"), std::string::npos) << redis.last_exit();
  // The open connection sees the crash as an I/O error, not a hang and not SIGPIPE.
  const RedisReply lost = client.Command("GET", "k");
  EXPECT_TRUE(lost.is_io_error()) << lost.ToString();
  EXPECT_FALSE(lost.timed_out);
  RecordProperty("crash_text", lost.text);
  EXPECT_FALSE(client.connected());
  EXPECT_TRUE(client.Command("PING").is_io_error());

  ASSERT_TRUE(redis.Start()) << redis.error();
  ASSERT_TRUE(client.Reconnect()) << client.error();
  EXPECT_TRUE(client.Command("GET", "k").is_nil());
  EXPECT_TRUE(client.Command("SET", "k", "again").Is("OK"));
}

TEST(RedisProcessTest, PausedServerTimesCommandsOutAndResumeLetsThemThrough) {
  RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  const Millis timeout(200);
  RedisClient client(kRedisHost, redis.port(), timeout, timeout);
  ASSERT_TRUE(client.Command("PING").Is("PONG"));

  ASSERT_TRUE(redis.Pause()) << redis.error();
  EXPECT_TRUE(redis.paused());
  auto start = SteadyClock::now();
  const RedisReply hung = client.Command("PING");
  Millis elapsed = ElapsedSince(start);
  EXPECT_TRUE(hung.is_io_error()) << hung.ToString();
  EXPECT_TRUE(hung.timed_out) << hung.ToString();
  RecordProperty("timeout_text", hung.text);
  EXPECT_GE(elapsed, Millis(180));
  EXPECT_LT(elapsed, Millis(1000));

  // The kernel still completes the handshake (listen backlog): a hung node accepts
  // connections and then answers nothing, unlike a dead one.
  RedisClient late(kRedisHost, redis.port(), timeout, timeout);
  EXPECT_TRUE(late.connected()) << late.error();
  start = SteadyClock::now();
  EXPECT_TRUE(late.Command("PING").timed_out);
  EXPECT_LT(ElapsedSince(start), Millis(1000));

  ASSERT_TRUE(redis.Resume()) << redis.error();
  EXPECT_FALSE(redis.paused());
  ASSERT_TRUE(client.Reconnect()) << client.error();
  EXPECT_TRUE(client.Command("PING").Is("PONG"));
}

TEST(RedisProcessTest, RestartFailsCleanlyWhileAnotherProcessHoldsThePort) {
  RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  const int port = redis.port();
  ASSERT_TRUE(redis.Stop()) << redis.error();

  // A listener that is not Redis takes the port while the node is down.
  const int squatter = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(squatter, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(bind(squatter, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);
  ASSERT_EQ(listen(squatter, 16), 0);
  const auto start = SteadyClock::now();
  EXPECT_FALSE(redis.Start());  // a restart keeps its port: no retry elsewhere
  EXPECT_LT(ElapsedSince(start), Millis(2000));
  EXPECT_NE(redis.error().find("Address already in use"), std::string::npos) << redis.error();
  EXPECT_EQ(redis.port(), port);
  close(squatter);

  ASSERT_TRUE(redis.Start()) << redis.error();
  EXPECT_EQ(redis.port(), port);
}

TEST(RedisProcessTest, StopEndsAPausedServerGracefully) {
  RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  ASSERT_TRUE(redis.Pause()) << redis.error();
  const auto start = SteadyClock::now();
  ASSERT_TRUE(redis.Stop()) << redis.error();
  EXPECT_LT(ElapsedSince(start), Millis(2000));
  // SIGTERM was handled (after SIGCONT), not escalated to SIGKILL.
  EXPECT_EQ(redis.last_exit(), "exited with status 0");
}

TEST(RedisProcessTest, TwoProcessesAtOnceGetDifferentPortsAndDirectories) {
  RedisProcess a;
  RedisProcess b;
  ASSERT_TRUE(a.Start()) << a.error();
  ASSERT_TRUE(b.Start()) << b.error();
  EXPECT_NE(a.port(), b.port());
  EXPECT_NE(a.dir(), b.dir());
  RedisClient to_a(a.port());
  RedisClient to_b(b.port());
  ASSERT_TRUE(to_a.Command("SET", "where", "a").Is("OK"));
  EXPECT_TRUE(to_b.Command("GET", "where").is_nil());
}

TEST(RedisProcessTest, DestructorStopsTheServerAndRemovesItsDirectory) {
  pid_t pid = -1;
  std::string dir;
  {
    RedisProcess redis;
    ASSERT_TRUE(redis.Start()) << redis.error();
    pid = redis.pid();
    dir = redis.dir();
    ASSERT_TRUE(std::filesystem::is_directory(dir));
  }
  EXPECT_EQ(kill(pid, 0), -1);  // reaped, not a zombie
  EXPECT_EQ(errno, ESRCH);
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(RedisProcessTest, BadArgumentFailsFastWithTheServerOutput) {
  RedisProcessOptions options;
  options.extra_args = {"--no-such-directive", "1"};
  RedisProcess redis(options);
  const auto start = SteadyClock::now();
  EXPECT_FALSE(redis.Start());
  EXPECT_LT(ElapsedSince(start), Millis(2000));
  EXPECT_FALSE(redis.running());
  EXPECT_NE(redis.error().find("no-such-directive"), std::string::npos) << redis.error();
}

TEST(RedisProcessTest, ClusterEnabledNodeGetsItsOwnBusPort) {
  RedisProcessOptions options;
  options.cluster_enabled = true;
  RedisProcess redis(options);
  ASSERT_TRUE(redis.Start()) << redis.error();
  EXPECT_GT(redis.cluster_bus_port(), 0);
  EXPECT_NE(redis.cluster_bus_port(), redis.port());
  EXPECT_TRUE(std::filesystem::exists(redis.dir() + "/nodes.conf"));
  RedisClient client(redis.port());
  const RedisReply nodes = client.Command("CLUSTER", "NODES");
  EXPECT_NE(nodes.text.find("@" + std::to_string(redis.cluster_bus_port())), std::string::npos)
      << nodes.ToString();
}

TEST(KeyHashSlotTest, MatchesClusterKeyslotIncludingHashTags) {
  // The specification's check value: CRC16/XMODEM("123456789") = 0x31C3.
  EXPECT_EQ(KeyHashSlot("123456789"), 0x31C3);
  RedisProcessOptions options;
  options.cluster_enabled = true;  // CLUSTER KEYSLOT needs cluster support on
  RedisProcess redis(options);
  ASSERT_TRUE(redis.Start()) << redis.error();
  RedisClient client(redis.port());
  for (const std::string& key : std::vector<std::string>{
           "", "a", "foo", "sluice:{api:1.2.3.4}", "{user1000}.following", "foo{}{bar}",
           "foo{{bar}}zap", "foo{bar}{zap}", "{}", "}{", "x{", std::string("bin\0\xff{", 7)}) {
    const RedisReply slot = client.Command("CLUSTER", "KEYSLOT", key);
    ASSERT_EQ(slot.type, RedisReply::Type::kInteger) << slot.ToString();
    EXPECT_EQ(KeyHashSlot(key), slot.integer) << "key " << key;
  }
  EXPECT_EQ(KeyHashSlot(KeyInSlot(1234, "k")), 1234);
}

// Every slot in exactly one CLUSTER SLOTS range, and each range on a known node.
void ExpectAllSlotsCovered(RedisCluster& cluster, size_t node) {
  RedisClient client(cluster.node(node).port());
  const RedisReply slots = client.Command("CLUSTER", "SLOTS");
  ASSERT_EQ(slots.type, RedisReply::Type::kArray) << slots.ToString();
  std::vector<int> owners(RedisCluster::kSlots, 0);
  std::set<int> primary_ports;
  for (const RedisReply& range : slots.elements) {
    ASSERT_GE(range.elements.size(), 3u) << range.ToString();
    const int port = static_cast<int>(range.elements[2].elements.at(1).integer);
    EXPECT_TRUE(cluster.IndexOfPort(port).has_value()) << range.ToString();
    primary_ports.insert(port);
    for (long long s = range.elements[0].integer; s <= range.elements[1].integer; ++s) {
      ++owners.at(static_cast<size_t>(s));
    }
  }
  for (int s = 0; s < RedisCluster::kSlots; ++s) ASSERT_EQ(owners[s], 1) << "slot " << s;
  EXPECT_EQ(primary_ports.size(), cluster.Primaries().size());
}

TEST(RedisClusterTest, ThreePrimariesFormAndAWrongNodeAnswersMoved) {
  RedisCluster cluster;
  const auto start = SteadyClock::now();
  ASSERT_TRUE(cluster.Start()) << cluster.error();
  RecordProperty("formation_ms", static_cast<int>(ElapsedSince(start).count()));
  ASSERT_EQ(cluster.size(), 3u);
  EXPECT_EQ(cluster.Primaries().size(), 3u);
  for (size_t i = 0; i < cluster.size(); ++i) {
    RedisClient client(cluster.node(i).port());
    const RedisReply info = client.Command("CLUSTER", "INFO");
    EXPECT_NE(info.text.find("cluster_state:ok"), std::string::npos) << info.text;
    EXPECT_NE(info.text.find("cluster_slots_ok:16384"), std::string::npos) << info.text;
    EXPECT_EQ(cluster.NodeId(i).size(), 40u);
  }
  ExpectAllSlotsCovered(cluster, 0);

  const std::string key = "sluice:{rule:client}";
  const int slot = KeyHashSlot(key);
  const std::optional<size_t> owner = cluster.PrimaryForSlot(slot);
  ASSERT_TRUE(owner.has_value());
  const size_t wrong = (*owner + 1) % cluster.size();
  EXPECT_EQ(cluster.PrimaryForSlot(slot, wrong), owner);  // every node agrees

  RedisClient right_node(cluster.node(*owner).port());
  ASSERT_TRUE(right_node.Command("SET", key, "7").Is("OK"));
  EXPECT_TRUE(right_node.Command("GET", key).Is("7"));
  RedisClient wrong_node(cluster.node(wrong).port());
  const RedisReply moved = wrong_node.Command("GET", key);
  EXPECT_TRUE(moved.Is(fmt::format("MOVED {} {}", slot, cluster.node(*owner).address())))
      << moved.ToString();
}

TEST(RedisClusterTest, SlotMigrationAnswersAskWhileMovingAndMovedAfter) {
  RedisCluster cluster;
  ASSERT_TRUE(cluster.Start()) << cluster.error();
  const std::string key1 = "{moving}:a";
  const std::string key2 = "{moving}:b";
  const int slot = KeyHashSlot("moving");
  const size_t from = cluster.PrimaryForSlot(slot).value();
  const size_t to = (from + 1) % cluster.size();
  const size_t other = (from + 2) % cluster.size();
  RedisClient source(cluster.node(from).port());
  RedisClient target(cluster.node(to).port());
  RedisClient bystander(cluster.node(other).port());
  ASSERT_TRUE(source.Command("SET", key1, "1").Is("OK"));
  ASSERT_TRUE(source.Command("SET", key2, "2").Is("OK"));
  const std::string at_source = fmt::format("MOVED {} {}", slot, cluster.node(from).address());
  const std::string ask_target = fmt::format("ASK {} {}", slot, cluster.node(to).address());

  ASSERT_TRUE(cluster.BeginSlotMigration(slot, from, to)) << cluster.error();
  // Keys still at the source are served there; the target redirects unless ASKING.
  EXPECT_TRUE(source.Command("GET", key1).Is("1"));
  EXPECT_TRUE(target.Command("GET", key1).Is(at_source));

  ASSERT_TRUE(cluster.MigrateSlotKeys(slot, from, to)) << cluster.error();
  EXPECT_EQ(source.Command("CLUSTER", "COUNTKEYSINSLOT", slot).integer, 0);
  EXPECT_EQ(target.Command("CLUSTER", "COUNTKEYSINSLOT", slot).integer, 2);
  const RedisReply ask = source.Command("GET", key1);
  EXPECT_TRUE(ask.Is(ask_target)) << ask.ToString();
  EXPECT_TRUE(target.Command("GET", key1).Is(at_source));  // without ASKING
  EXPECT_TRUE(target.Command("ASKING").Is("OK"));
  EXPECT_TRUE(target.Command("GET", key1).Is("1"));
  // ASKING covers one command only.
  EXPECT_TRUE(target.Command("GET", key2).Is(at_source));

  ASSERT_TRUE(cluster.FinishSlotMigration(slot, from, to)) << cluster.error();
  const std::string at_target = fmt::format("MOVED {} {}", slot, cluster.node(to).address());
  const RedisReply moved = source.Command("GET", key1);
  EXPECT_TRUE(moved.Is(at_target)) << moved.ToString();
  EXPECT_TRUE(bystander.Command("GET", key2).Is(at_target));
  EXPECT_TRUE(target.Command("GET", key1).Is("1"));
  EXPECT_TRUE(target.Command("GET", key2).Is("2"));
  ASSERT_TRUE(cluster.WaitUntilHealthy(Millis(5000))) << cluster.error();
  ExpectAllSlotsCovered(cluster, other);
}

TEST(RedisClusterTest, KilledPrimaryRestartsOnItsPortAndRejoinsWithItsSlots) {
  RedisCluster cluster;
  ASSERT_TRUE(cluster.Start()) << cluster.error();
  const std::string key = "{restart}:k";
  const int slot = KeyHashSlot(key);
  const size_t owner = cluster.PrimaryForSlot(slot).value();
  RedisProcess& node = cluster.node(owner);
  const int port = node.port();
  const std::string id = cluster.NodeId(owner);
  {
    RedisClient client(port);
    ASSERT_TRUE(client.Command("SET", key, "v").Is("OK"));
  }

  ASSERT_TRUE(node.Kill()) << node.error();
  ASSERT_TRUE(node.Start()) << node.error();
  EXPECT_EQ(node.port(), port);
  const auto start = SteadyClock::now();
  ASSERT_TRUE(cluster.WaitUntilHealthy(Millis(8000))) << cluster.error();
  RecordProperty("rejoin_ms", static_cast<int>(ElapsedSince(start).count()));
  RedisClient client(port);
  EXPECT_TRUE(client.Command("CLUSTER", "MYID").Is(id));  // nodes.conf kept its identity
  EXPECT_EQ(cluster.PrimaryForSlot(slot, (owner + 1) % cluster.size()), owner);
  EXPECT_TRUE(client.Command("GET", key).is_nil());  // and no data
}

TEST(RedisClusterTest, PrimariesWithOneReplicaEachReplicate) {
  RedisClusterOptions options;
  options.replicas_per_primary = 1;
  RedisCluster cluster(options);
  ASSERT_TRUE(cluster.Start()) << cluster.error();
  ASSERT_EQ(cluster.size(), 6u);
  ASSERT_EQ(cluster.Primaries().size(), 3u);
  ExpectAllSlotsCovered(cluster, 5);

  const std::string key = "{replicated}:k";
  const size_t owner = cluster.PrimaryForSlot(KeyHashSlot(key)).value();
  ASSERT_TRUE(cluster.IsPrimary(owner));
  RedisClient primary(cluster.node(owner).port());
  ASSERT_TRUE(primary.Command("SET", key, "v").Is("OK"));
  const RedisReply acked = primary.Command("WAIT", 1, 2000);
  EXPECT_EQ(acked.integer, 1) << acked.ToString();
}

}  // namespace
}  // namespace sluice::testing
