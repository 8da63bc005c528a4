#include "serve/console_assets.h"

#include <map>
#include <string>

#include "serve/api.h"

namespace bluegreen::serve {
namespace {

struct Asset {
  std::string_view body;
  std::string content_type;
  std::string etag;
};

std::string ContentType(std::string_view path) {
  static const std::pair<std::string_view, const char*> kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".json", "application/json"},
      {".webmanifest", "application/manifest+json"}};
  for (const auto& [ext, type] : kTypes) {
    if (path.ends_with(ext)) return type;
  }
  return "application/octet-stream";
}

// The files by the URL path they are served at; ETags are computed once.
const std::map<std::string, Asset, std::less<>>& Assets() {
  static const auto* assets = [] {
    auto* m = new std::map<std::string, Asset, std::less<>>();
    for (size_t i = 0; i < kConsoleFilesCount; ++i) {
      const EmbeddedFile& f = kConsoleFiles[i];
      Asset a;
      a.body = std::string_view(reinterpret_cast<const char*>(f.data), f.size);
      a.content_type = ContentType(f.path);
      a.etag = "\"" + Sha256Hex(a.body).substr(0, 20) + "\"";
      (*m)["/console/" + std::string(f.path)] = a;
    }
    return m;
  }();
  return *assets;
}

}  // namespace

std::optional<HttpResponse> ConsoleAsset(const HttpRequest& req) {
  if (req.method != "GET") return std::nullopt;
  std::string_view path = req.path;
  if (path == "/" || path == "/index.html") path = "/console/index.html";
  const auto& assets = Assets();
  auto it = assets.find(path);
  if (it == assets.end()) return std::nullopt;
  const Asset& a = it->second;
  HttpResponse r;
  r.content_type = a.content_type;
  r.headers = {{"ETag", a.etag},
               {"Cache-Control", "no-cache"},
               {"Content-Security-Policy", std::string(kConsoleCsp)},
               {"X-Content-Type-Options", "nosniff"},
               {"X-Frame-Options", "DENY"},
               {"Referrer-Policy", "no-referrer"}};
  std::string_view match = req.Header("If-None-Match");
  if (!match.empty() &&
      (match == a.etag || match == "*" || match.find(a.etag) != std::string_view::npos)) {
    r.status = 304;
    return r;
  }
  r.body = std::string(a.body);
  return r;
}

}  // namespace bluegreen::serve
