#include "serve/serve.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/asio/signal_set.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/http_server.h"
#include "common/subprocess.h"
#include "serve/access.h"
#include "serve/api.h"
#include "serve/console_assets.h"
#include "serve/live_updates.h"
#include "serve/metrics_sampler.h"
#include "serve/pipeline.h"
#include "serve/reconciler.h"
#include "store/store.h"

namespace bluegreen::serve {
namespace {

namespace fs = std::filesystem;
constexpr const char* kTokenHashKey = "admin_token_sha256";

// Writes the admin token on first start (or when its file was deleted) and returns its hash.
Result<std::string> EnsureAdminToken(store::Store* store, const std::string& dir) {
  const std::string path = dir + "/admin.token";
  Result<std::optional<std::string>> hash = store->GetMeta(kTokenHashKey);
  if (!hash.ok()) return hash.status();
  std::error_code ec;
  if (hash->has_value() && fs::exists(path, ec)) return **hash;
  if (hash->has_value()) {
    spdlog::warn("{} is missing: writing a new admin token (the old one stops working)", path);
  }
  Result<std::string> new_token = NewToken();
  if (!new_token.ok()) return new_token.status();
  const std::string& token = *new_token;
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Internal(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  const std::string line = token + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Internal(fmt::format("cannot write {}", tmp));
  // The hash is committed first: a crash between the two leaves a token file that does not
  // match, which the next start replaces.
  const std::string h = Sha256Hex(token);
  BG_RETURN_IF_ERROR(store->SetMeta(kTokenHashKey, h));
  fs::rename(tmp, path, ec);
  if (ec) return Internal(fmt::format("cannot write {}: {}", path, ec.message()));
  spdlog::info("wrote the admin token to {}", path);
  return h;
}

// serve writes its state directory all the time (the store, logs, the proxy's state file): a
// directory that cannot take a write is refused at start with one message that says why.
Status CheckWritable(const std::string& dir) {
  const std::string probe = dir + "/.write-check";
  auto refuse = [&dir](int err) {
    if (err == EROFS) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("the state directory {} is read-only: serve needs to write there "
                                "(the store, logs, the proxy's state); make it writable and start "
                                "serve again",
                                dir));
    }
    if (err == ENOSPC || err == EDQUOT) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("the state directory {} is full (no space left on its disk): "
                                "free some space and start serve again",
                                dir));
    }
    return Unavailable(
        fmt::format("cannot write in the state directory {}: {}", dir, std::strerror(err)));
  };
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return refuse(errno);
  const std::string block(4096, '\0');
  int err = 0;
  if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
    err = errno != 0 ? errno : ENOSPC;
  } else if (::fsync(fd) != 0) {
    err = errno;
  }
  ::close(fd);
  ::unlink(probe.c_str());
  return err == 0 ? Status::Ok() : refuse(err);
}

}  // namespace

std::string DefaultStateDir() {
  if (const char* d = std::getenv("BLUEGREEN_STATE_DIR"); d && *d) return d;
  if (::geteuid() == 0) return "/var/lib/bluegreen";
  const char* home = std::getenv("HOME");
  return fmt::format("{}/.local/state/bluegreen", home && *home ? home : "/tmp");
}

int RunServe(const ServeOptions& options) {
  std::signal(SIGPIPE, SIG_IGN);
  const std::string dir =
      options.state_dir.empty() ? DefaultStateDir() : fs::absolute(options.state_dir).string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    spdlog::error("cannot create the state directory {}: {}", dir, ec.message());
    return 1;
  }
  ::chmod(dir.c_str(), 0700);
  if (Status writable = CheckWritable(dir); !writable.ok()) {
    spdlog::error("{}", writable.message());
    return 1;
  }

  // One serve per state directory.
  const std::string lock_path = dir + "/serve.lock";
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) {
    spdlog::error("cannot open {}: {}", lock_path, std::strerror(errno));
    return 1;
  }
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    spdlog::error("another `bluegreen serve` uses {} (lock {} is held)", dir, lock_path);
    return 1;
  }

  Result<std::unique_ptr<store::Store>> store = store::Store::Open(dir + "/bluegreen.db");
  if (!store.ok()) {
    spdlog::error("{}", store.status().message());
    return 1;
  }
  Result<std::string> token_hash = EnsureAdminToken(store->get(), dir);
  if (!token_hash.ok()) {
    spdlog::error("{}", token_hash.status().message());
    return 1;
  }

  Result<std::optional<std::string>> install_id = (*store)->GetMeta("install_id");
  if (!install_id.ok()) {
    spdlog::error("{}", install_id.status().message());
    return 1;
  }
  if (!install_id->has_value()) {
    unsigned char raw[4];
    if (RAND_bytes(raw, sizeof raw) != 1) return 1;
    *install_id = fmt::format("{:02x}{:02x}{:02x}{:02x}", raw[0], raw[1], raw[2], raw[3]);
    Status st = (*store)->SetMeta("install_id", **install_id);
    if (!st.ok()) {
      spdlog::error("{}", st.message());
      return 1;
    }
  }
  Reconciler reconciler(store->get(), Paths{dir, **install_id},
                        options.self_binary.empty() ? SelfExecutable() : options.self_binary,
                        options.proxy_workers);
  Pipeline pipeline(store->get(), Paths{dir, **install_id}, [&reconciler] { reconciler.Notify(); },
                    options.keep_versions);
  reconciler.SetPipeline(&pipeline);
  boost::asio::io_context io(1);
  Api api(io, store->get(), &reconciler, &pipeline, *token_hash);
  // The web console: its files, its live streams and the traffic samples they chart.
  MetricsSampler metrics(Paths{dir, **install_id}.proxy_admin(),
                         [&reconciler] { return reconciler.ProxyState(); });
  LiveUpdates live(
      io, store->get(), [&api](const std::string& stack) { return api.StackStatus(stack); },
      &metrics);
  api.AttachConsole(&live);
  HttpServer server(io, [&api](const HttpRequest& req, HttpServer::Respond respond) {
    if (std::optional<HttpResponse> file = ConsoleAsset(req)) return respond(std::move(*file));
    api.Handle(req, std::move(respond));
  });
  Status st = server.Listen(options.api);
  if (!st.ok()) {
    spdlog::error("cannot listen on {}: {}", options.api, st.message());
    return 1;
  }
  reconciler.Start();
  pipeline.Start();
  metrics.Start();
  spdlog::info("serve: state {}, API http://{}/api/v1, console http://{}/", dir, server.address(),
               server.address());

  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& e, int sig) {
    if (e) return;
    spdlog::info("signal {}: stopping serve (the proxy and the tasks keep running)", sig);
    live.Stop();
    server.Close();
    io.stop();
  });
  io.run();
  metrics.Stop();
  pipeline.Stop();
  reconciler.Stop();
  return 0;
}

}  // namespace bluegreen::serve
