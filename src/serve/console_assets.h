// The web console's files (src/serve/console/: HTML, CSS, JavaScript modules, an icon), embedded
// into the binary at build time (cmake/embed_files.cmake) and served by `bluegreen serve` at `/`
// and `/console/FILE`, with their content type, an ETag (304 when it matches If-None-Match),
// `Cache-Control: no-cache` and a strict Content-Security-Policy: scripts, styles and API calls
// from the same origin only, no inline script, no frames. The files need no token: the console
// signs in with one and sends it with each API call. Thread-safe (read-only data).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include "common/http_server.h"

namespace bluegreen::serve {

struct EmbeddedFile {
  const char* path;  // relative to src/serve/console, e.g. "app.js"
  const unsigned char* data;
  size_t size;
};

// Defined in the generated console_files.cc.
extern const EmbeddedFile kConsoleFiles[];
extern const size_t kConsoleFilesCount;

// The answer to GET of "/", "/index.html" or "/console/FILE" when FILE is a console file;
// nullopt for every other request (the API answers those).
std::optional<HttpResponse> ConsoleAsset(const HttpRequest& req);

// The Content-Security-Policy of the console's pages.
inline constexpr std::string_view kConsoleCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

}  // namespace bluegreen::serve
