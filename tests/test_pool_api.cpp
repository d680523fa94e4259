// PoolApi through request objects (no sockets): routing, authentication and
// body limits before the body; name binding and impersonation; strict
// protocol types; the ledger hash chain over CSV and JSON exports.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/pool/admin.h"
#include "runtime/pool/http_api.h"
#include "runtime/pool/ledger.h"
#include "runtime/pool/protocol.h"
#include "runtime/pool/state.h"

using nlohmann::json;
using namespace myelin::pool;

namespace {

struct Pool {
  std::string dir;
  std::unique_ptr<PoolState> state;
  std::unique_ptr<PoolApi> api;
  std::string alice, bob;
  explicit Pool(bool private_status = false) {
    dir = (std::filesystem::temp_directory_path() /
           ("myelin_pool_api_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name()))
              .string();
    std::filesystem::remove_all(dir);
    state = std::make_unique<PoolState>(dir, 30, true);
    {
      Db db(db_path(dir));
      alice = create_token(db, "alice", false);
      bob = create_token(db, "bob", false);
    }
    ApiOptions o;
    o.private_status = private_status;
    api = std::make_unique<PoolApi>(*state, o);
  }
  ~Pool() { std::filesystem::remove_all(dir); }
  ApiResponse call(const std::string& method, const std::string& path, const std::string& token,
                   const std::string& body = "") {
    ApiRequest r;
    r.method = method;
    r.path = path;
    if (!token.empty()) r.authorization = "Bearer " + token;
    r.body = body;
    return api->handle(r);
  }
};

} // namespace

TEST(PoolApi, RefusesBeforeTheBody) {
  Pool p;
  ApiRequest head;
  head.method = "POST";
  head.path = "/api/join";
  head.authorization = "Bearer " + p.alice;
  head.content_length = 400000000;
  auto r = p.api->precheck(head);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(r->close);
  head.content_length = 100;
  EXPECT_FALSE(p.api->precheck(head));
  head.chunked = true;
  ASSERT_TRUE(p.api->precheck(head));
  EXPECT_EQ(p.api->precheck(head)->status, 411);
  head.chunked = false;
  head.authorization.clear();
  EXPECT_EQ(p.api->precheck(head)->status, 401);
  head.path = "/api/nope";
  EXPECT_EQ(p.api->precheck(head)->status, 404);
  head.path = "/api/status";
  EXPECT_EQ(p.api->precheck(head)->status, 405);
}

TEST(PoolApi, StatusPublicUnlessPrivate) {
  Pool pub;
  EXPECT_EQ(pub.call("GET", "/api/status", "").status, 200);
  EXPECT_EQ(pub.call("GET", "/api/status", "myl_wrong").status, 401);
  Pool priv(true);
  EXPECT_EQ(priv.call("GET", "/api/status", "").status, 401);
  EXPECT_EQ(priv.call("GET", "/api/ledger", "").status, 401);
  EXPECT_EQ(priv.call("GET", "/", "").status, 200); // the page holds no data
  EXPECT_EQ(priv.call("GET", "/api/status", priv.alice).status, 200);
}

TEST(PoolApi, NamesBelongToTheirTokenAndNobodyActsForAnother) {
  Pool p;
  auto j = p.call("POST", "/api/join", p.alice, R"({"name": "box", "hardware": {"cores": 4}})");
  ASSERT_EQ(j.status, 200) << j.body;
  const auto cid = json::parse(j.body)["contributor_id"].get<std::int64_t>();
  const std::string id = "{\"contributor_id\": " + std::to_string(cid);
  EXPECT_EQ(p.call("POST", "/api/join", p.bob, R"({"name": "box"})").status, 403);
  EXPECT_EQ(p.call("POST", "/api/heartbeat", p.bob, id + R"(, "state": "idle"})").status, 403);
  EXPECT_EQ(p.call("POST", "/api/work", p.bob, id + "}").status, 403);
  EXPECT_EQ(p.call("POST", "/api/leave", p.bob, id + "}").status, 403);
  EXPECT_EQ(p.call("POST", "/api/heartbeat", p.alice, id + R"(, "state": "idle"})").status, 200);
  const auto st = json::parse(p.call("GET", "/api/status", "").body);
  ASSERT_EQ(st["contributors"].size(), 1u);
  EXPECT_EQ(st["contributors"][0]["hardware"]["cores"], 4);
  EXPECT_FALSE(st["contributors"][0].contains("token"));
}

TEST(PoolApi, OneTokenRegistersABoundedNumberOfNames) {
  Pool p;
  const auto join = [&](const std::string& token, const std::string& name) {
    return p.call("POST", "/api/join", token, R"({"name": ")" + name + R"("})").status;
  };
  for (std::int64_t i = 0; i < kMaxNamesPerToken; ++i)
    EXPECT_EQ(join(p.alice, "box" + std::to_string(i)), 200) << i;
  EXPECT_EQ(join(p.alice, "one-too-many"), 403);
  EXPECT_EQ(join(p.alice, "box0"), 200);       // a name it holds stays usable
  EXPECT_EQ(join(p.bob, "one-too-many"), 200); // the cap is per token
}

TEST(PoolApi, BadBodiesAre400WithJsonAnswers) {
  Pool p;
  for (const char* body :
       {"{\"name\": \"\xff\xfe\"}", R"({"name": "x", "hardware": "gpu"})",
        R"({"name": "x", "hardware": {"cores": 2.5}})",
        R"({"name": "x", "hardware": {"cores": "8"}})",
        R"({"name": "x", "hardware": {"cores": true}})", R"({"name": "x", "hardware": {"x": 1}})",
        R"({"name": ""})", "[1]", "{"}) {
    const auto r = p.call("POST", "/api/join", p.alice, body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_TRUE(json::accept(r.body)) << r.body;
  }
  EXPECT_EQ(p.call("POST", "/api/heartbeat", p.alice, R"({"contributor_id": 1.5, "state": "idle"})")
                .status,
            400);
}

TEST(PoolProtocol, ClaimsAreBounded) {
  EXPECT_NO_THROW(check_claims({10, 1.5, 2.3, std::nullopt}));
  EXPECT_NO_THROW(check_claims({10, 1.5, std::nullopt, 0.25}));
  EXPECT_THROW(check_claims({10, 1e300, std::nullopt, std::nullopt}), ProtocolError);
  EXPECT_THROW(check_claims({10, -1, std::nullopt, std::nullopt}), ProtocolError);
  EXPECT_THROW(check_claims({10, 1, 1e30, std::nullopt}), ProtocolError);
  EXPECT_THROW(check_claims({-1, 1, std::nullopt, std::nullopt}), ProtocolError);
  EXPECT_THROW(check_claims({10, 1, std::nullopt, -1.0}), ProtocolError);
  EXPECT_THROW(check_claims({10, 1, std::nullopt, NAN}), ProtocolError);
}

TEST(PoolLedger, ChainVerifiesFromCsvAndJsonAndNamesTheEditedRow) {
  json rows = json::array();
  std::string prev;
  for (int i = 1; i <= 4; ++i) {
    json r = {{"id", i},
              {"job", 1},
              {"round", i - 1},
              {"seq", i},
              {"tokens", 512},
              {"compute_s", 0.25},
              {"train_loss", nullptr},
              {"status", "accepted"},
              {"reason", i == 2 ? "a, \"quoted\"\nreason" : ""}};
    r["hash"] = ledger_hash(prev, r);
    prev = r["hash"];
    rows.push_back(r);
  }
  const std::string csv = ledger_to_csv(rows);
  EXPECT_TRUE(verify_ledger(rows.dump()).ok) << verify_ledger(rows.dump()).message;
  EXPECT_TRUE(verify_ledger(csv).ok) << verify_ledger(csv).message;
  json edited = rows;
  edited[2]["tokens"] = 513;
  const auto bad = verify_ledger(edited.dump());
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("row 3 "), std::string::npos) << bad.message;
  json dropped = rows;
  dropped.erase(1);
  EXPECT_NE(verify_ledger(dropped.dump()).message.find("row 2 "), std::string::npos);
  std::string csv_edit = csv;
  csv_edit.replace(csv_edit.find("0.25"), 4, "0.26");
  EXPECT_FALSE(verify_ledger(csv_edit).ok);
}

TEST(PoolProtocol, StatusRoundTripsAndPrintsWhateverHardwareSays) {
  Pool p;
  ASSERT_EQ(
      p.call("POST", "/api/join", p.alice, R"({"name": "box", "hardware": {"cores": 4}})").status,
      200);
  json st = json::parse(p.call("GET", "/api/status", "").body);
  const auto typed = st.get<StatusResponse>();
  ASSERT_EQ(typed.contributors.size(), 1u);
  EXPECT_EQ(typed.contributors[0].hardware.cores, 4);
  EXPECT_EQ(json(typed)["contributors"][0]["name"], "box");
  st["contributors"][0]["hardware"] = "not an object"; // as an older coordinator could send
  std::ostringstream out;
  EXPECT_NO_THROW(print_status(st, out));
  EXPECT_NE(out.str().find("box"), std::string::npos);
}
