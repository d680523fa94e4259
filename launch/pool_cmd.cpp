// myelin pool serve | token create | submit | status | ledger | stop:
// options -> runtime/pool.
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
#include "runtime/util/error.h"

namespace po = boost::program_options;

namespace myelin::launch {
namespace {

const char* kPoolUsage =
    "usage: myelin pool <serve|token|submit|status|ledger|stop> [options]\n"
    "\n"
    "  serve    --listen HOST:PORT --state-dir DIR [--tls-cert F --tls-key F]\n"
    "  token    create --state-dir DIR --name NAME [--admin]\n"
    "  submit   --pool URL --token T JOB.json          (admin token)\n"
    "  status   --pool URL --token T [--json]\n"
    "  ledger   --pool URL --token T [--job ID] [--format csv|json] [--out FILE]\n"
    "  stop     --pool URL --token T --job ID          (admin token)\n"
    "\n"
    "`myelin pool <sub> --help` describes each one's options.\n";

void add_client_options(po::options_description& d, pool::ClientOptions& c) {
  d.add_options()("pool", po::value(&c.url)->required(),
                  "coordinator URL, http://HOST:PORT or https://...")(
      "token", po::value(&c.token)->required(), "bearer token")(
      "ca-cert", po::value(&c.ca_cert), "https: trust this CA certificate (self-signed pools)")(
      "insecure", po::bool_switch(&c.insecure),
      "https: do not verify the certificate")("help,h", "show this help");
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
      "largest request body accepted (MiB)")("threads",
                                             po::value(&o.threads)->default_value(o.threads),
                                             "CPU threads for evaluating global models")(
      "quiet", po::bool_switch(&o.quiet), "no log lines")("help,h", "show this help");
  po::variables_map vm;
  if (!parse_or_help(args, d, vm, "myelin pool serve --listen HOST:PORT --state-dir DIR")) return 0;
  return pool::serve(o);
}

int token_main(const Args& args) {
  std::string dir, name;
  bool admin = false;
  po::options_description d("myelin pool token create");
  d.add_options()("action", po::value<std::string>()->required(), "create")(
      "state-dir", po::value(&dir)->required(), "the coordinator's state folder")(
      "name", po::value(&name)->required(), "who the token is for")(
      "admin", po::bool_switch(&admin), "may submit and stop jobs")("help,h", "show this help");
  po::positional_options_description pos;
  pos.add("action", 1);
  po::variables_map vm;
  if (!parse_or_help(args, d, vm, "myelin pool token create --state-dir DIR --name NAME [--admin]",
                     &pos))
    return 0;
  require(vm["action"].as<std::string>() == "create", "myelin pool token", "expected 'create'");
  std::cout << pool::token_create(dir, name, admin) << std::endl;
  return 0;
}

int submit_main(const Args& args) {
  pool::ClientOptions c;
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
  pool::PoolClient cli(c);
  try {
    const auto r = cli.post_json("/api/jobs", j);
    std::cout << "submitted job " << r["job"] << std::endl;
  } catch (const pool::PoolError& e) {
    if (e.status() >= 400 && e.status() < 500) throw InputError(e.what());
    throw;
  }
  return 0;
}

int status_main(const Args& args) {
  pool::ClientOptions c;
  bool as_json = false;
  po::options_description d("myelin pool status");
  add_client_options(d, c);
  d.add_options()("json", po::bool_switch(&as_json), "print the raw JSON");
  po::variables_map vm;
  if (!parse_or_help(args, d, vm, "myelin pool status --pool URL --token T [--json]")) return 0;
  pool::PoolClient cli(c);
  const auto st = cli.get_json("/api/status");
  if (as_json)
    std::cout << st.dump(2) << std::endl;
  else
    pool::print_status(st, std::cout);
  return 0;
}

int ledger_main(const Args& args) {
  pool::ClientOptions c;
  std::string format = "csv", out;
  long long job = -1;
  po::options_description d("myelin pool ledger");
  add_client_options(d, c);
  d.add_options()("job", po::value(&job), "only this job")(
      "format", po::value(&format)->default_value(format),
      "csv | json")("out", po::value(&out), "write to this file instead of stdout");
  po::variables_map vm;
  if (!parse_or_help(args, d, vm,
                     "myelin pool ledger --pool URL --token T [--job ID] [--format csv|json]"))
    return 0;
  require(format == "csv" || format == "json", "--format", "expected csv or json");
  require(!vm.count("job") || job >= 1, "--job", "expected a job id (1 or more)");
  pool::PoolClient cli(c);
  std::string path = "/api/ledger?format=" + format;
  if (job >= 0) path += "&job=" + std::to_string(job);
  std::string text = cli.get_text(path);
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

int stop_main(const Args& args) {
  pool::ClientOptions c;
  long long job = 0;
  po::options_description d("myelin pool stop");
  add_client_options(d, c);
  d.add_options()("job", po::value(&job)->required(), "job to stop");
  po::variables_map vm;
  if (!parse_or_help(args, d, vm, "myelin pool stop --pool URL --token T --job ID")) return 0;
  require(job >= 1, "--job", "expected a job id (1 or more)");
  pool::PoolClient cli(c);
  cli.post_json("/api/jobs/" + std::to_string(job) + "/stop", nlohmann::json::object());
  std::cout << "stopped job " << job << std::endl;
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
  if (sub == "stop") return stop_main(rest);
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
