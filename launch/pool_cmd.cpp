// myelin pool serve | token create|revoke|list | submit | status | ledger |
// cancel: options -> runtime/pool.
#include <iostream>

#include "launch/commands.h"

#ifdef MYELIN_HAVE_POOL
#include <boost/program_options.hpp>
#include <fstream>
#include <sstream>

#include "launch/options_util.h"
#include "runtime/pool/admin.h"
#include "runtime/pool/client.h"
#include "runtime/pool/coordinator.h"
#include "runtime/pool/ledger.h"
#include "runtime/util/error.h"

namespace po = boost::program_options;

namespace myelin::launch {
namespace {

const char* kPoolUsage =
    "usage: myelin pool <serve|token|submit|status|ledger|cancel> [options]\n"
    "\n"
    "  serve    --listen HOST:PORT --state-dir DIR [--tls-cert F --tls-key F] [--private]\n"
    "  token    create --state-dir DIR --name NAME [--admin]   (one token per volunteer)\n"
    "           revoke --state-dir DIR (--name NAME | --id ID)\n"
    "           list   --state-dir DIR\n"
    "  submit   --pool URL --token-file F JOB.json             (admin token)\n"
    "  status   --pool URL [--json]\n"
    "  ledger   --pool URL [--job ID] [--format csv|json] [--out FILE]\n"
    "  ledger   --verify FILE                                   (recompute the hash chain)\n"
    "  cancel   --pool URL --token-file F JOB                   (admin token; 'stop' too)\n"
    "\n"
    "A token comes from --token-file FILE, the MYELIN_POOL_TOKEN environment variable or\n"
    "--token T (visible in ps). `myelin pool <sub> --help` describes each one's options.\n";

// Client options; the token is resolved by finish_client after parsing.
struct ClientArgs {
  pool::ClientOptions c;
  std::string token_file;
};
void add_client_options(po::options_description& d, ClientArgs& a, bool url_required = true) {
  auto url = po::value(&a.c.url);
  if (url_required) url->required();
  d.add_options()("pool", url, "coordinator URL, http://HOST:PORT or https://...")(
      "token", po::value(&a.c.token), "bearer token (visible in ps; prefer --token-file)")(
      "token-file", po::value(&a.token_file), "read the bearer token from this file")(
      "ca-cert", po::value(&a.c.ca_cert), "https: trust this CA certificate (self-signed pools)")(
      "insecure", po::bool_switch(&a.c.insecure),
      "https: do not verify the certificate")("help,h", "show this help");
}
pool::ClientOptions finish_client(ClientArgs& a) {
  a.c.token = pool::resolve_token(a.c.token, a.token_file);
  return a.c;
}
// HTTP 4xx answers are bad input (exit 2) with the server's one-line reason.
template <typename F> auto as_input_error(F f) -> decltype(f()) {
  try {
    return f();
  } catch (const pool::PoolError& e) {
    if (e.status() >= 400 && e.status() < 500) throw InputError(e.what());
    throw;
  }
}

int serve_main(const Args& args) {
  pool::ServeOptions o;
  po::options_description d("myelin pool serve");
  d.add_options()("listen", po::value(&o.listen)->default_value(o.listen),
                  "HOST:PORT to listen on (port 0 = any free port, written to STATE_DIR/port)")(
      "state-dir", po::value(&o.state_dir)->required(),
      "folder for the SQLite database and model snapshots")(
      "tls-cert", po::value(&o.tls_cert), "serve HTTPS with this certificate (PEM)")(
      "tls-key", po::value(&o.tls_key), "private key of --tls-cert (PEM)")(
      "heartbeat-timeout", po::value(&o.heartbeat_timeout_s)->default_value(o.heartbeat_timeout_s),
      "seconds without a heartbeat before a contributor counts as gone")(
      "max-upload-mb", po::value(&o.max_upload_mb)->default_value(o.max_upload_mb),
      "largest request body accepted (MiB)")(
      "private", po::bool_switch(&o.private_status),
      "the status page, /api/status and the ledger need a token (default: public, read-only)")(
      "http-threads", po::value(&o.gate.workers)->default_value(o.gate.workers),
      "threads serving complete requests (slow clients wait in the gate, not here)")(
      "max-connections", po::value(&o.gate.max_connections)->default_value(o.gate.max_connections),
      "open connections in all (more are closed at once)")(
      "max-connections-per-ip", po::value(&o.gate.max_per_ip)->default_value(o.gate.max_per_ip),
      "open connections from one address")(
      "header-timeout", po::value(&o.gate.head_timeout_s)->default_value(o.gate.head_timeout_s),
      "seconds a request's headers may take to arrive")(
      "idle-timeout", po::value(&o.gate.idle_timeout_s)->default_value(o.gate.idle_timeout_s),
      "seconds an idle connection is kept open")("threads",
                                                 po::value(&o.threads)->default_value(o.threads),
                                                 "CPU threads for evaluating global models")(
      "quiet", po::bool_switch(&o.quiet), "no log lines")("help,h", "show this help");
  po::variables_map vm;
  if (!parse_or_help(args, d, vm, "myelin pool serve --listen HOST:PORT --state-dir DIR")) return 0;
  return pool::serve(o);
}

int token_main(const Args& args) {
  std::string dir, name;
  long long id = -1;
  bool admin = false;
  po::options_description d("myelin pool token create | revoke | list");
  d.add_options()("action", po::value<std::string>()->required(), "create | revoke | list")(
      "state-dir", po::value(&dir)->required(), "the coordinator's state folder")(
      "name", po::value(&name),
      "create: who the token is for (one per volunteer); revoke: "
      "revoke every token of this name")("id", po::value(&id),
                                         "revoke: the token with this id (see list)")(
      "admin", po::bool_switch(&admin), "create: may submit and cancel jobs")("help,h",
                                                                              "show this help");
  po::positional_options_description pos;
  pos.add("action", 1);
  po::variables_map vm;
  if (!parse_or_help(args, d, vm,
                     "myelin pool token create --state-dir DIR --name NAME [--admin] | revoke "
                     "--state-dir DIR (--name NAME | --id ID) | list --state-dir DIR",
                     &pos))
    return 0;
  const std::string action = vm["action"].as<std::string>();
  if (action == "create") {
    require(!name.empty(), "--name", "required");
    std::cout << pool::token_create(dir, name, admin) << std::endl;
  } else if (action == "revoke") {
    const int n = pool::token_revoke(dir, id, name);
    std::cout << "revoked " << n << " token(s); their contributors are dropped and further "
              << "requests with them get 401" << std::endl;
  } else if (action == "list") {
    pool::token_list(dir, std::cout);
  } else {
    throw InputError("myelin pool token: expected create, revoke or list, got '" + action + "'");
  }
  return 0;
}

int submit_main(const Args& args) {
  ClientArgs c;
  std::string file;
  po::options_description d("myelin pool submit");
  add_client_options(d, c);
  d.add_options()("job", po::value(&file)->required(), "job description (JSON file)");
  po::positional_options_description pos;
  pos.add("job", 1);
  po::variables_map vm;
  if (!parse_or_help(args, d, vm, "myelin pool submit --pool URL --token T JOB.json", &pos))
    return 0;
  std::ifstream f(file);
  require(bool(f), file, "cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(file + ": not valid JSON: " + e.what());
  }
  pool::PoolClient cli(finish_client(c));
  const auto r = as_input_error([&] { return cli.post_json("/api/jobs", j); });
  std::cout << "submitted job " << r["job"] << std::endl;
  return 0;
}

int status_main(const Args& args) {
  ClientArgs c;
  bool as_json = false;
  po::options_description d("myelin pool status");
  add_client_options(d, c);
  d.add_options()("json", po::bool_switch(&as_json), "print the raw JSON");
  po::variables_map vm;
  if (!parse_or_help(args, d, vm, "myelin pool status --pool URL [--token-file F] [--json]"))
    return 0;
  pool::PoolClient cli(finish_client(c));
  const auto st = as_input_error([&] { return cli.get_json("/api/status"); });
  if (as_json)
    std::cout << st.dump(2) << std::endl;
  else
    pool::print_status(st, std::cout);
  return 0;
}

int ledger_main(const Args& args) {
  ClientArgs c;
  std::string format = "csv", out, verify;
  long long job = -1;
  po::options_description d("myelin pool ledger");
  add_client_options(d, c, false);
  d.add_options()("verify", po::value(&verify),
                  "recompute the hash chain of an exported ledger (CSV or JSON) and name the "
                  "first bad row")("job", po::value(&job), "only this job")(
      "format", po::value(&format)->default_value(format),
      "csv | json")("out", po::value(&out), "write to this file instead of stdout");
  po::variables_map vm;
  if (!parse_or_help(args, d, vm,
                     "myelin pool ledger --pool URL [--job ID] [--format csv|json] | "
                     "--verify FILE"))
    return 0;
  if (!verify.empty()) {
    std::ifstream f(verify, std::ios::binary);
    require(bool(f), "--verify", "cannot open " + verify);
    std::ostringstream text;
    text << f.rdbuf();
    const pool::LedgerCheck r = pool::verify_ledger(text.str());
    if (!r.ok) {
      std::cerr << "myelin pool ledger: " << verify << ": chain broken at " << r.message
                << std::endl;
      return 1;
    }
    std::cout << verify << ": " << r.message << std::endl;
    return 0;
  }
  require(!c.c.url.empty(), "--pool", "required (or --verify FILE)");
  require(format == "csv" || format == "json", "--format", "expected csv or json");
  require(!vm.count("job") || job >= 1, "--job", "expected a job id (1 or more)");
  pool::PoolClient cli(finish_client(c));
  std::string path = "/api/ledger?format=" + format;
  if (job >= 0) path += "&job=" + std::to_string(job);
  std::string text = as_input_error([&] { return cli.get_text(path); });
  if (format == "json") text = nlohmann::json::parse(text).dump(2) + "\n";
  if (out.empty()) {
    std::cout << text;
  } else {
    std::ofstream f(out);
    require(bool(f), "--out", "cannot write " + out);
    f << text;
  }
  return 0;
}

int cancel_main(const Args& args, const char* verb) {
  ClientArgs c;
  long long job = 0;
  po::options_description d((std::string("myelin pool ") + verb).c_str());
  add_client_options(d, c);
  d.add_options()("job", po::value(&job)->required(), "job to cancel");
  po::positional_options_description pos;
  pos.add("job", 1);
  po::variables_map vm;
  if (!parse_or_help(args, d, vm, "myelin pool cancel --pool URL --token-file F JOB", &pos))
    return 0;
  require(job >= 1, "--job", "expected a job id (1 or more)");
  pool::PoolClient cli(finish_client(c));
  as_input_error([&] {
    return cli.post_json("/api/jobs/" + std::to_string(job) + "/cancel", nlohmann::json::object());
  });
  std::cout << "cancelled job " << job << std::endl;
  return 0;
}

} // namespace

int pool_main(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kPoolUsage;
    return args.empty() ? 2 : 0;
  }
  const Args rest(args.begin() + 1, args.end());
  const std::string& sub = args[0];
  if (sub == "serve") return serve_main(rest);
  if (sub == "token") return token_main(rest);
  if (sub == "submit") return submit_main(rest);
  if (sub == "status") return status_main(rest);
  if (sub == "ledger") return ledger_main(rest);
  if (sub == "cancel" || sub == "stop") return cancel_main(rest, sub.c_str());
  std::cerr << "myelin pool: unknown subcommand '" << sub << "'\n" << kPoolUsage;
  return 2;
}

} // namespace myelin::launch

#else

namespace myelin::launch {
int pool_main(const Args&) {
  std::cerr << "myelin pool: not built (configure with -DMYELIN_POOL=ON and the pool's "
               "dependencies: cpp-httplib, nlohmann-json, SQLite3, OpenSSL)\n";
  return 1;
}
} // namespace myelin::launch

#endif
