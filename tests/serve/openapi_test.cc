// docs/openapi.yaml against the two things it describes: docs/api.md (the same endpoints, no more
// and no fewer) and a real serve (every path and method in it is routed: neither "no such path"
// nor 405). Path parameters compare as "{}": `NAME` in api.md, `{name}` in OpenAPI.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "serve_harness.h"

namespace bluegreen::serve_it {
namespace {

using Endpoint = std::pair<std::string, std::string>;  // method, path with "{}" parameters

std::string ReadDoc(const std::string& relative) {
  std::ifstream in(std::string(BLUEGREEN_SOURCE_DIR) + "/" + relative);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// "/api/v1/stacks/{name}/executions/ID/log[?offset=N]" -> "/api/v1/stacks/{}/executions/{}/log".
std::string Normalize(std::string path) {
  path = path.substr(0, path.find('['));
  path = path.substr(0, path.find('?'));
  std::string out;
  std::stringstream segments(path);
  std::string segment;
  while (std::getline(segments, segment, '/')) {
    if (segment.empty()) continue;
    const bool param = (segment.front() == '{' && segment.back() == '}') ||
                       std::regex_match(segment, std::regex("[A-Z][A-Z_]*"));
    out += "/" + (param ? std::string("{}") : segment);
  }
  return out;
}

std::set<Endpoint> OpenApiEndpoints(const YAML::Node& doc) {
  std::set<Endpoint> out;
  for (const auto& path : doc["paths"]) {
    for (const auto& op : path.second) {
      const std::string method = op.first.as<std::string>();
      if (method == "parameters") continue;
      std::string upper;
      for (char c : method) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      out.emplace(upper, Normalize(path.first.as<std::string>()));
    }
  }
  return out;
}

// Every "`METHOD /api/...`" in a "###" heading of docs/api.md.
std::set<Endpoint> ApiMdEndpoints(const std::string& text) {
  std::set<Endpoint> out;
  const std::regex endpoint("`(GET|PUT|POST|DELETE|PATCH) (/api/v1/[^` ]*)`");
  std::stringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("###", 0) != 0) continue;
    for (std::sregex_iterator it(line.begin(), line.end(), endpoint), end; it != end; ++it) {
      out.emplace((*it)[1].str(), Normalize((*it)[2].str()));
    }
  }
  return out;
}

std::string Describe(const std::set<Endpoint>& s) {
  std::string out;
  for (const auto& [m, p] : s) out += "\n  " + m + " " + p;
  return out;
}

TEST(OpenApiDoc, DescribesTheSameEndpointsAsApiMd) {
  const YAML::Node doc = YAML::Load(ReadDoc("docs/openapi.yaml"));
  ASSERT_EQ(doc["openapi"].as<std::string>().substr(0, 2), "3.");
  const std::set<Endpoint> openapi = OpenApiEndpoints(doc);
  const std::set<Endpoint> md = ApiMdEndpoints(ReadDoc("docs/api.md"));
  ASSERT_GT(md.size(), 15u) << "docs/api.md headings not found:" << Describe(md);
  std::set<Endpoint> only_openapi, only_md;
  for (const Endpoint& e : openapi) {
    if (!md.count(e)) only_openapi.insert(e);
  }
  for (const Endpoint& e : md) {
    if (!openapi.count(e)) only_md.insert(e);
  }
  EXPECT_TRUE(only_openapi.empty()) << "in docs/openapi.yaml, not in docs/api.md:"
                                    << Describe(only_openapi);
  EXPECT_TRUE(only_md.empty()) << "in docs/api.md, not in docs/openapi.yaml:"
                               << Describe(only_md);
}

class OpenApiServeTest : public ServeTest {};

TEST_F(OpenApiServeTest, EveryOperationIsRouted) {
  const YAML::Node doc = YAML::Load(ReadDoc("docs/openapi.yaml"));
  int checked = 0;
  for (const auto& path : doc["paths"]) {
    for (const auto& op : path.second) {
      const std::string method = op.first.as<std::string>();
      if (method == "parameters") continue;
      // A stream never ends; it is exercised by its own tests.
      bool stream = false;
      for (const auto& response : op.second["responses"]) {
        if (response.second["content"] && response.second["content"]["text/event-stream"]) {
          stream = true;
        }
      }
      if (stream) continue;
      std::string target = std::regex_replace(path.first.as<std::string>(),
                                              std::regex("\\{[a-z_]+\\}"), "openapi-none");
      std::string upper;
      for (char c : method) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api(upper, target, "{}"));
      SCOPED_TRACE(upper + " " + target + " -> " + std::to_string(a.status) + " " + a.body);
      EXPECT_NE(a.status, 405);
      EXPECT_EQ(a.body.find("no such path"), std::string::npos);
      EXPECT_TRUE(a.status < 500) << "a 5xx for a request about a stack that does not exist";
      ++checked;
    }
  }
  EXPECT_GT(checked, 15);
}

}  // namespace
}  // namespace bluegreen::serve_it
