// Api: the REST API of serve (docs/api.md), as an HttpServer handler. Every call but healthz and
// the webhook is authenticated and its role checked (serve/access.h) before anything else. Reads
// come from the store and the reconciler's last view of the proxy; writes are committed to the
// store, then the reconciler is notified to make them so. Runs on the HttpServer's io_context thread; blocking
// work never happens here (a `down` answers from the reconciler's thread via asio::post).
#pragma once

#include <string>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "common/http_server.h"
#include "serve/access.h"
#include "serve/live_updates.h"
#include "serve/pipeline.h"
#include "serve/reconciler.h"
#include "store/store.h"

namespace bluegreen::serve {

class Api {
 public:
  // `admin_token_sha256` is the lowercase hex SHA-256 of the admin token.
  Api(boost::asio::io_context& io, store::Store* store, Reconciler* reconciler,
      Pipeline* pipeline, std::string admin_token_sha256);

  void Handle(const HttpRequest& req, HttpServer::Respond respond);

  // The status document of one stack (GET /api/v1/stacks/NAME), or NotFound.
  Result<nlohmann::json> StackStatus(const std::string& name);

  // The web console's live routes (GET /api/v1/stream, /api/v1/stacks/NAME/stream and
  // /api/v1/stacks/NAME/metrics) answer through `live` once it is attached.
  void AttachConsole(LiveUpdates* live) { live_ = live; }

 private:
  void Route(const std::vector<std::string>& p, const HttpRequest& req,
             HttpServer::Respond respond);
  void PutStack(const std::string& name, const HttpRequest& req, HttpServer::Respond respond);
  void DeleteStack(const std::string& name, const HttpRequest& req, HttpServer::Respond respond);
  void PostVersion(const std::string& name, const HttpRequest& req, HttpServer::Respond respond);
  void PostDeploy(const std::string& name, const HttpRequest& req, HttpServer::Respond respond);
  // A container stack with `service.image` and no version yet gets that image as its first
  // version, on both services. Returns the version name when it did.
  std::optional<std::string> DeployStackImage(const std::string& name,
                                              const stack::StackSpec& spec);
  HttpResponse ListStacks();
  HttpResponse ListVersions(const std::string& name);
  HttpResponse ListEvents(const std::string& name);
  HttpResponse ListExecutions(const std::string& name);
  HttpResponse GetExecution(const std::string& name, const std::string& id);
  HttpResponse GetLog(const std::string& name, const std::string& id, const HttpRequest& req);
  void PipelineAction(const std::string& name, const std::string& action, const Identity& who,
                      const HttpRequest& req, HttpServer::Respond respond);
  HttpResponse Webhook(const std::string& name, const HttpRequest& req);
  HttpResponse PutSecret(const std::string& name, const std::string& key, const HttpRequest& req);
  // Access: GET /whoami, /tokens and /tokens/NAME.
  HttpResponse TokenRoute(const std::vector<std::string>& p, const HttpRequest& req,
                          const Identity& who);
  HttpResponse CreateToken(const HttpRequest& req, const Identity& who);

  boost::asio::io_context& io_;
  store::Store* store_;
  Reconciler* reconciler_;
  Pipeline* pipeline_;
  Access access_;
  LiveUpdates* live_ = nullptr;
};

// The changes `up` makes, in words: empty when `before` equals `after`. `before` is null for a
// new stack.
std::vector<std::string> DescribeChanges(const stack::StackSpec* before,
                                         const stack::StackSpec& after);

}  // namespace bluegreen::serve
