#include "pipeline/buildspec.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace bluegreen::pipeline {
namespace {

namespace fs = std::filesystem;
using Strings = std::vector<std::string>;

// Raw strings below start with a newline so that their first line is line 1 of the document.
std::string Doc(std::string_view text) {
  if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
  return std::string(text);
}

std::string ErrorOf(std::string_view text) {
  Result<BuildSpecFile> spec = ParseBuildSpec(Doc(text));
  EXPECT_FALSE(spec.ok()) << "parsed:\n" << text;
  if (spec.ok()) return "";
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  return spec.status().message();
}

BuildSpecFile ParseOk(std::string_view text) {
  Result<BuildSpecFile> spec = ParseBuildSpec(Doc(text));
  EXPECT_TRUE(spec.ok()) << spec.status().message();
  return spec.ok() ? *spec : BuildSpecFile{};
}

// The shape of the example in the CodeBuild buildspec reference, without the keys bluegreen
// rejects (parameter-store, secrets-manager, install's finally).
constexpr std::string_view kCodeBuildExample = R"(
version: 0.2

env:
  variables:
    JAVA_HOME: "/usr/lib/jvm/java-8-openjdk-amd64"
    LOG_LEVEL: debug

phases:
  install:
    runtime-versions:
      java: corretto11
    commands:
      - echo Entered the install phase...
      - apt-get update -y
      - apt-get install -y maven
  pre_build:
    commands:
      - echo Entered the pre_build phase...
      - docker login -u User -p $LOGIN_PASSWORD
  build:
    on-failure: CONTINUE
    commands:
      - echo Entered the build phase...
      - echo Build started on `date`
      - mvn install
    finally:
      - echo This always runs even if the build commands fail
  post_build:
    commands:
      - echo Entered the post_build phase...
      - echo Build completed on `date`

reports:
  arn:aws:codebuild:your-region:your-aws-account-id:report-group/report-group-name-1:
    files:
      - "**/*"
    base-directory: 'target/tests/reports'
    discard-paths: no
artifacts:
  files:
    - target/messageUtil-1.0.jar
  discard-paths: yes
  name: $(date +%Y-%m-%d)
cache:
  paths:
    - '/root/.m2/**/*'
)";

TEST(BuildSpecTest, ParsesCodeBuildExample) {
  BuildSpecFile spec = ParseOk(kCodeBuildExample);
  EXPECT_EQ(spec.version, "0.2");
  EXPECT_EQ(spec.env,
            (std::vector<std::pair<std::string, std::string>>{
                {"JAVA_HOME", "/usr/lib/jvm/java-8-openjdk-amd64"}, {"LOG_LEVEL", "debug"}}));
  EXPECT_EQ(spec.install, (Strings{"echo Entered the install phase...", "apt-get update -y",
                                   "apt-get install -y maven"}));
  EXPECT_EQ(spec.pre_build, (Strings{"echo Entered the pre_build phase...",
                                     "docker login -u User -p $LOGIN_PASSWORD"}));
  EXPECT_EQ(spec.build, (Strings{"echo Entered the build phase...", "echo Build started on `date`",
                                 "mvn install"}));
  EXPECT_EQ(spec.finally_build, Strings{"echo This always runs even if the build commands fail"});
  EXPECT_EQ(spec.post_build,
            (Strings{"echo Entered the post_build phase...", "echo Build completed on `date`"}));
  EXPECT_EQ(spec.install_on_failure, OnFailure::kAbort);
  EXPECT_EQ(spec.pre_build_on_failure, OnFailure::kAbort);
  EXPECT_EQ(spec.build_on_failure, OnFailure::kContinue);
  EXPECT_EQ(spec.post_build_on_failure, OnFailure::kAbort);
  EXPECT_EQ(spec.artifact_files, Strings{"target/messageUtil-1.0.jar"});
  EXPECT_EQ(spec.base_directory, "");
  EXPECT_TRUE(spec.discard_paths);
}

TEST(BuildSpecTest, ParsesMinimalBuildSpec) {
  BuildSpecFile spec = ParseOk(R"(
version: "0.2"
phases:
  build:
    commands:
      - make
)");
  BuildSpecFile expected;
  expected.version = "0.2";
  expected.build = {"make"};
  EXPECT_EQ(spec, expected);
  EXPECT_TRUE(spec.env.empty());
  EXPECT_TRUE(spec.artifact_files.empty());
  EXPECT_FALSE(spec.discard_paths);
  EXPECT_EQ(spec.build_on_failure, OnFailure::kAbort);
}

TEST(BuildSpecTest, ParsesStaticSiteShape) {
  // The usual shape for a static site: build into a directory, publish everything in it.
  BuildSpecFile spec = ParseOk(R"(
version: 0.2
phases:
  install:
    commands: [npm ci]
  build:
    commands: [npm run build]
artifacts:
  files: ['**/*']
  base-directory: public
)");
  EXPECT_EQ(spec.install, Strings{"npm ci"});
  EXPECT_EQ(spec.build, Strings{"npm run build"});
  EXPECT_EQ(spec.artifact_files, Strings{"**/*"});
  EXPECT_EQ(spec.base_directory, "public");
  EXPECT_FALSE(spec.discard_paths);
}

TEST(BuildSpecTest, ConvertsScalarsToTheirText) {
  BuildSpecFile spec = ParseOk(R"(
version: 0.2
env:
  variables:
    PORT: 8080
    DEBUG: yes
    RATIO: 0.50
    EMPTY: ""
phases:
  build:
    commands:
      - 42
      - true
      - "echo a: b"
      - |
        for f in a b; do
          echo $f
        done
)");
  EXPECT_EQ(spec.env, (std::vector<std::pair<std::string, std::string>>{
                          {"PORT", "8080"}, {"DEBUG", "yes"}, {"RATIO", "0.50"}, {"EMPTY", ""}}));
  EXPECT_EQ(spec.build,
            (Strings{"42", "true", "echo a: b", "for f in a b; do\n  echo $f\ndone\n"}));
}

TEST(BuildSpecTest, KeepsEnvironmentVariablesInFileOrder) {
  BuildSpecFile spec = ParseOk(R"(
version: 0.2
env:
  variables:
    ZETA: "1"
    ALPHA: "2"
    MIDDLE: "3"
    _under: "4"
    b9: "5"
phases:
  build:
    commands: [env]
)");
  ASSERT_EQ(spec.env.size(), 5u);
  EXPECT_EQ(spec.env[0], (std::pair<std::string, std::string>{"ZETA", "1"}));
  EXPECT_EQ(spec.env[1], (std::pair<std::string, std::string>{"ALPHA", "2"}));
  EXPECT_EQ(spec.env[2], (std::pair<std::string, std::string>{"MIDDLE", "3"}));
  EXPECT_EQ(spec.env[3], (std::pair<std::string, std::string>{"_under", "4"}));
  EXPECT_EQ(spec.env[4], (std::pair<std::string, std::string>{"b9", "5"}));
}

TEST(BuildSpecTest, AllCommandsRunsPhasesInOrder) {
  // Written out of order on purpose: the phase order is fixed, not the file's.
  BuildSpecFile spec = ParseOk(R"(
version: 0.2
phases:
  post_build: {commands: [p1, p2]}
  build: {commands: [b1, b2], finally: [f1]}
  pre_build: {commands: [r1]}
  install: {commands: [i1, i2]}
)");
  EXPECT_EQ(AllCommands(spec), (Strings{"i1", "i2", "r1", "b1", "b2", "f1", "p1", "p2"}));
  EXPECT_TRUE(AllCommands(BuildSpecFile{}).empty());
}

TEST(BuildSpecTest, AcceptsAnyPhaseAlone) {
  for (std::string_view phase : {"install", "pre_build", "build", "post_build"}) {
    Result<BuildSpecFile> spec = ParseBuildSpec("version: 0.2\nphases:\n  " + std::string(phase) +
                                                ":\n    commands: [make]\n");
    ASSERT_TRUE(spec.ok()) << phase << ": " << spec.status().message();
    EXPECT_EQ(AllCommands(*spec), Strings{"make"});
  }
  // An empty phase is allowed as long as another one has commands.
  BuildSpecFile spec = ParseOk(R"(
version: 0.2
phases:
  install:
  pre_build:
    commands:
  build:
    commands: [make]
)");
  EXPECT_EQ(AllCommands(spec), Strings{"make"});
}

TEST(BuildSpecTest, ParsesOnFailure) {
  BuildSpecFile spec = ParseOk(R"(
version: 0.2
phases:
  install: {on-failure: ABORT, commands: [a]}
  pre_build: {on-failure: CONTINUE, commands: [b]}
  build: {commands: [c]}
  post_build: {on-failure: CONTINUE, commands: [d]}
)");
  EXPECT_EQ(spec.install_on_failure, OnFailure::kAbort);
  EXPECT_EQ(spec.pre_build_on_failure, OnFailure::kContinue);
  EXPECT_EQ(spec.build_on_failure, OnFailure::kAbort);
  EXPECT_EQ(spec.post_build_on_failure, OnFailure::kContinue);
  EXPECT_EQ(OnFailureName(OnFailure::kAbort), "ABORT");
  EXPECT_EQ(OnFailureName(OnFailure::kContinue), "CONTINUE");
}

TEST(BuildSpecTest, ParsesArtifactForms) {
  BuildSpecFile spec = ParseOk(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts:
  files: server
  base-directory: build/out/
  discard-paths: "no"
)");
  EXPECT_EQ(spec.artifact_files, Strings{"server"});
  EXPECT_EQ(spec.base_directory, "build/out/");
  EXPECT_FALSE(spec.discard_paths);

  for (std::string_view yes : {"yes", "true", "\"yes\""}) {
    spec = ParseOk(
        "version: 0.2\nphases: {build: {commands: [make]}}\nartifacts:\n  files: [a, "
        "'out/*', '**/*.html']\n  discard-paths: " +
        std::string(yes) + "\n");
    EXPECT_EQ(spec.artifact_files, (Strings{"a", "out/*", "**/*.html"})) << yes;
    EXPECT_TRUE(spec.discard_paths) << yes;
  }
  for (std::string_view no : {"no", "false"}) {
    spec = ParseOk(
        "version: 0.2\nphases: {build: {commands: [make]}}\nartifacts:\n  files: [a]\n"
        "  discard-paths: " +
        std::string(no) + "\n");
    EXPECT_FALSE(spec.discard_paths) << no;
  }
}

TEST(BuildSpecTest, IgnoresReportsCacheBatchNameAndRuntimeVersions) {
  BuildSpecFile spec = ParseOk(R"(
version: 0.2
phases:
  install:
    runtime-versions: {nodejs: 20, python: 3.12}
    commands: [npm ci]
  build: {commands: [make]}
reports:
  junit: {files: ['**/*.xml'], file-format: JUNITXML, anything: [goes, here]}
cache:
  paths: ['node_modules/**/*']
batch:
  fast-fail: false
  build-list: [{identifier: a}]
artifacts:
  files: [out/]
  name: whatever
)");
  EXPECT_EQ(AllCommands(spec), (Strings{"npm ci", "make"}));
  EXPECT_EQ(spec.artifact_files, Strings{"out/"});
}

TEST(BuildSpecTest, AcceptsJson) {
  BuildSpecFile spec = ParseOk(
      R"({"version": "0.2", "env": {"variables": {"A": "1"}},
          "phases": {"build": {"commands": ["make"]}}, "artifacts": {"files": ["out/*"]}})");
  EXPECT_EQ(spec.build, Strings{"make"});
  EXPECT_EQ(spec.env, (std::vector<std::pair<std::string, std::string>>{{"A", "1"}}));
  EXPECT_EQ(spec.artifact_files, Strings{"out/*"});
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(BuildSpecTest, ReportsVersionErrors) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.1
phases: {build: {commands: [make]}}
)"),
            "line 1: version: bluegreen supports only version 0.2 of the buildspec format, got "
            "\"0.1\"");
  EXPECT_EQ(ErrorOf(R"(
version: 0.20
phases: {build: {commands: [make]}}
)"),
            "line 1: version: bluegreen supports only version 0.2 of the buildspec format, got "
            "\"0.20\"");
  EXPECT_EQ(ErrorOf(R"(
phases: {build: {commands: [make]}}
)"),
            "line 1: version: missing required key");
  EXPECT_EQ(ErrorOf(R"(
version: [0.2]
phases: {build: {commands: [make]}}
)"),
            "line 1: version: expected a string, got a sequence");
}

TEST(BuildSpecTest, RejectsUnsupportedEnvKeys) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
env:
  shell: bash
  variables: {A: "1"}
  parameter-store:
    LOGIN_PASSWORD: /CodeBuild/dockerLoginPassword
  secrets-manager:
    TOKEN: arn:aws:secretsmanager:token
  exported-variables: [A]
  git-credential-helper: yes
phases: {build: {commands: [make]}}
)"),
            "line 3: env.shell: not supported by bluegreen (commands run with sh)\n"
            "line 6: env.parameter-store: not supported by bluegreen (there is no AWS Systems "
            "Manager Parameter Store; use env.variables)\n"
            "line 8: env.secrets-manager: not supported by bluegreen (there is no AWS Secrets "
            "Manager; use env.variables)\n"
            "line 9: env.exported-variables: not supported by bluegreen (variables are not passed "
            "on to later stages)\n"
            "line 10: env.git-credential-helper: not supported by bluegreen (the repository is "
            "checked out before the build starts)");
}

TEST(BuildSpecTest, RejectsUnsupportedTopLevelAndPhaseKeys) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
run-as: root
proxy: {upload-artifacts: yes}
phases:
  install:
    run-as: root
    finally: [echo done]
    commands: [a]
  build:
    runtime-versions: {java: corretto11}
    commands: [b]
artifacts:
  files: [a]
  exclude-paths: [b]
  enable-symlinks: yes
  s3-prefix: builds
  secondary-artifacts: {other: {files: [c]}}
)"),
            "line 2: run-as: not supported by bluegreen (builds run as the user that runs "
            "bluegreen)\n"
            "line 3: proxy: not supported by bluegreen (builds have no CodeBuild proxy server)\n"
            "line 6: phases.install.run-as: not supported by bluegreen (builds run as the user "
            "that runs bluegreen)\n"
            "line 7: phases.install.finally: not supported by bluegreen (only "
            "phases.build.finally is)\n"
            "line 10: phases.build.runtime-versions: not supported by bluegreen (runtime-versions "
            "belongs under phases.install, where it is ignored)\n"
            "line 14: artifacts.exclude-paths: not supported by bluegreen (list only the files to "
            "keep in files)\n"
            "line 15: artifacts.enable-symlinks: not supported by bluegreen (symbolic links are "
            "copied as files)\n"
            "line 16: artifacts.s3-prefix: not supported by bluegreen (artifacts are kept by "
            "bluegreen, not in S3)\n"
            "line 17: artifacts.secondary-artifacts: not supported by bluegreen (bluegreen keeps "
            "one set of artifacts per build)");
}

TEST(BuildSpecTest, ReportsUnknownKeys) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
  pre-build:
    commands: [a]
  build:
    command: [make]
  deploy:
    commands: [b]
artifact:
  files: [a]
)"),
            "line 3: phases.pre-build: unknown key (did you mean \"pre_build\"?)\n"
            "line 6: phases.build.command: unknown key (did you mean \"commands\"?)\n"
            "line 7: phases.deploy: unknown key (expected one of: install, pre_build, build, "
            "post_build)\n"
            "line 9: artifact: unknown key (did you mean \"artifacts\"?)");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
  build:
    commands: [make]
    timeout: 5m
)"),
            "line 5: phases.build.timeout: unknown key (expected one of: commands, finally, "
            "on-failure)");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts: {files: [a], format: zip}
)"),
            "line 3: artifacts.format: unknown key (expected one of: files, name, base-directory, "
            "discard-paths)");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
env: {vars: {A: "1"}}
phases: {build: {commands: [make]}}
)"),
            "line 2: env.vars: unknown key (expected one of: variables)");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
pipeline: {}
)"),
            "line 3: pipeline: unknown key (expected one of: version, env, phases, artifacts, "
            "reports, cache, batch)");
}

TEST(BuildSpecTest, ReportsMissingOrEmptyCommands) {
  EXPECT_EQ(ErrorOf("version: 0.2\n"), "line 1: phases: missing required key");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
)"),
            "line 2: phases: at least one command is required (in install, pre_build, build or "
            "post_build commands)");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
  install:
    runtime-versions: {python: 3.12}
  build:
    commands: []
    finally: [echo only finally]
)"),
            "line 3: phases: at least one command is required (in install, pre_build, build or "
            "post_build commands)");
}

TEST(BuildSpecTest, ReportsCommandTypeErrors) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
  install:
    - npm ci
  pre_build:
    commands: echo hi
  build:
    commands:
      - echo key: value
      - ""
      - ~
      - [nested]
  post_build: run
)"),
            "line 4: phases.install: expected a map, got a sequence (put the commands under "
            "phases.install.commands)\n"
            "line 6: phases.pre_build.commands: expected a sequence, got a scalar\n"
            "line 9: phases.build.commands[0]: expected a command, got a map (quote a command "
            "that contains \": \")\n"
            "line 10: phases.build.commands[1]: must not be empty\n"
            "line 11: phases.build.commands[2]: expected a command, got null\n"
            "line 12: phases.build.commands[3]: expected a command, got a sequence\n"
            "line 13: phases.post_build: expected a map, got a scalar");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
  build:
    commands: ["a\0b"]
)"),
            "line 4: phases.build.commands[0]: must be valid UTF-8 without NUL characters");
}

TEST(BuildSpecTest, ReportsOnFailureErrors) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
  install: {on-failure: RETRY-3, commands: [a]}
  build: {on-failure: abort, commands: [b]}
  post_build: {on-failure: [ABORT], commands: [c]}
)"),
            "line 3: phases.install.on-failure: RETRY is not supported by bluegreen (use ABORT or "
            "CONTINUE), got \"RETRY-3\"\n"
            "line 4: phases.build.on-failure: must be ABORT or CONTINUE, got \"abort\"\n"
            "line 5: phases.post_build.on-failure: expected a string, got a sequence");
}

TEST(BuildSpecTest, ReportsEnvironmentErrors) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
env:
  variables:
    GOOD: "1"
    9LIVES: "2"
    BAD-NAME: "3"
    EMPTY:
    LIST: [a, b]
    GOOD: "again"
    ? [key]
    : value
    NUL: "a\0b"
phases: {build: {commands: [make]}}
)"),
            "line 5: env.variables.9LIVES: environment variable names must match "
            "[A-Za-z_][A-Za-z0-9_]*, got \"9LIVES\"\n"
            "line 6: env.variables.BAD-NAME: environment variable names must match "
            "[A-Za-z_][A-Za-z0-9_]*, got \"BAD-NAME\"\n"
            "line 7: env.variables.EMPTY: values must be strings, got null (quote it: \"\")\n"
            "line 8: env.variables.LIST: values must be strings, got a sequence\n"
            "line 9: env.variables.GOOD: duplicate key\n"
            "line 10: env.variables: keys must be strings, got a sequence\n"
            "line 12: env.variables.NUL: values must be valid UTF-8 without NUL characters");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
env:
  variables: [A=1]
phases: {build: {commands: [make]}}
)"),
            "line 3: env.variables: expected a map of strings, got a sequence");
}

TEST(BuildSpecTest, ReportsArtifactErrors) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts:
  name: site
)"),
            "line 4: artifacts.files: missing required key");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts:
)"),
            "line 3: artifacts.files: missing required key");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts:
  files: []
)"),
            "line 4: artifacts.files: must not be empty (leave artifacts out instead)");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts:
  files:
    - ../secrets
    - /etc/passwd
    - out/../../x
    - ""
    - {a: b}
    - ok/*
  base-directory: ../up
  discard-paths: maybe
)"),
            "line 5: artifacts.files[0]: must not contain \"..\", got \"../secrets\"\n"
            "line 6: artifacts.files[1]: must be a relative path, got \"/etc/passwd\"\n"
            "line 7: artifacts.files[2]: must not contain \"..\", got \"out/../../x\"\n"
            "line 8: artifacts.files[3]: must not be empty\n"
            "line 9: artifacts.files[4]: expected a string, got a map\n"
            "line 11: artifacts.base-directory: must not contain \"..\", got \"../up\"\n"
            "line 12: artifacts.discard-paths: must be yes, no, true or false, got \"maybe\"");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts:
  files: [a]
  base-directory: /srv/out
)"),
            "line 5: artifacts.base-directory: must be a relative path, got \"/srv/out\"");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts:
  files: [a]
  base-directory: ""
)"),
            "line 5: artifacts.base-directory: must not be empty");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
artifacts:
  files: {a: b}
)"),
            "line 4: artifacts.files: expected a sequence, got a map");
}

TEST(BuildSpecTest, ReportsTypeErrorsOfSections) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
env: [A=1]
phases: [build]
artifacts: out/
)"),
            "line 2: env: expected a map, got a sequence\n"
            "line 3: phases: expected a map, got a sequence\n"
            "line 4: artifacts: expected a map, got a scalar");
}

TEST(BuildSpecTest, ReportsDuplicateKeys) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
  build: {commands: [a]}
  build: {commands: [b]}
version: 0.2
)"),
            "line 4: phases.build: duplicate key\n"
            "line 5: version: duplicate key");
}

TEST(BuildSpecTest, ReportsSeveralErrorsTogetherInLineOrder) {
  EXPECT_EQ(ErrorOf(R"(
version: 0.1
env:
  secrets-manager: {A: b}
  variables: {A-B: c}
phases:
  build:
    commands: [make]
    on-failure: RETRY
artifacts:
  files: [../x]
)"),
            "line 1: version: bluegreen supports only version 0.2 of the buildspec format, got "
            "\"0.1\"\n"
            "line 3: env.secrets-manager: not supported by bluegreen (there is no AWS Secrets "
            "Manager; use env.variables)\n"
            "line 4: env.variables.A-B: environment variable names must match "
            "[A-Za-z_][A-Za-z0-9_]*, got \"A-B\"\n"
            "line 8: phases.build.on-failure: RETRY is not supported by bluegreen (use ABORT or "
            "CONTINUE), got \"RETRY\"\n"
            "line 10: artifacts.files[0]: must not contain \"..\", got \"../x\"");
}

TEST(BuildSpecTest, ReportsDocumentLevelErrors) {
  EXPECT_EQ(ErrorOf(""), "line 1: the buildspec is empty");
  EXPECT_EQ(ErrorOf("# only a comment\n"), "line 1: the buildspec is empty");
  EXPECT_EQ(ErrorOf("- version: 0.2\n"), "line 1: the buildspec must be a map, got a sequence");
  EXPECT_EQ(ErrorOf("just text\n"), "line 1: the buildspec must be a map, got a scalar");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases: {build: {commands: [make]}}
---
version: 0.2
)"),
            "line 3: expected one YAML document; another one starts here");
  EXPECT_EQ(ErrorOf(R"(
version: 0.2
phases:
  build:
    commands: [make
)"),
            "line 5: invalid YAML: end of sequence flow not found");
  EXPECT_EQ(ErrorOf("version: 0.2\nphases: {build: {commands: [\"caf\xc3\"]}}\n"),
            "the text is not valid UTF-8 (byte 45)");
}

TEST(BuildSpecTest, RejectsHostileSizes) {
  std::string big = "version: 0.2\nphases: {build: {commands: [make]}}\n# ";
  big.append(size_t{1} << 20, 'x');
  EXPECT_EQ(ErrorOf(big), "the buildspec is too large (" + std::to_string(big.size()) +
                              " bytes; at most 1048576)");

  // Many small values in few bytes: decoding stops at 100,000.
  std::string many = "version: 0.2\nphases: {build: {commands: [a";
  for (int i = 0; i < 100'000; ++i) many += ",a";
  many += "]}}\n";
  EXPECT_EQ(ErrorOf(many), "line 2: the buildspec is too large (more than 100000 values)");

  // Aliases do not multiply the work: a list of aliased lists is rejected item by item.
  std::string laughs =
      "version: 0.2\nx: &a0 [c, c, c, c, c, c, c, c, c, c]\nphases:\n  build:\n"
      "    commands: [*a0, *a0]\n";
  EXPECT_EQ(ErrorOf(laughs),
            "line 2: x: unknown key (expected one of: version, env, phases, artifacts, reports, "
            "cache, batch)\n"
            "line 2: phases.build.commands[0]: expected a command, got a sequence\n"
            "line 2: phases.build.commands[1]: expected a command, got a sequence");

  // Deep nesting is an error, not a stack overflow.
  std::string deep = "version: 0.2\nphases: " + std::string(100'000, '[') + "\n";
  std::string message = ErrorOf(deep);
  EXPECT_NE(message.find("invalid YAML"), std::string::npos) << message;
}

// ---------------------------------------------------------------------------------------------
// ExpandArtifactPatterns

class ArtifactPatternsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir_template = (fs::temp_directory_path() / "buildspec_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(dir_template.data()), nullptr);
    base_ = dir_template;
    root_ = base_ / "checkout";
    for (const char* file : {"index.html", "server", "README.md", "out/app.js", "out/index.html",
                             "out/assets/logo.png", "out/assets/site.css", "docs/guide/intro.html",
                             "docs/.hidden.html", "empty/.keep"}) {
      Write(root_ / file);
    }
    Write(base_ / "outside.html");
    fs::create_symlink("out/app.js", root_ / "inside_link.js");
    fs::create_symlink(base_ / "outside.html", root_ / "escape.html");
    fs::create_symlink("../../outside.html", root_ / "out" / "escape_relative.html");
    fs::create_symlink("out", root_ / "dir_link");
    fs::create_symlink(base_, root_ / "base_link");
    fs::create_symlink("missing.html", root_ / "dangling.html");
  }

  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  static void Write(const fs::path& path) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << path.filename().string() << "\n";
  }

  Strings Expand(const Strings& patterns) { return ExpandIn(root_, patterns); }

  static Strings ExpandIn(const fs::path& root, const Strings& patterns) {
    Result<Strings> files = ExpandArtifactPatterns(root.string(), patterns);
    EXPECT_TRUE(files.ok()) << files.status().message();
    return files.ok() ? *files : Strings{"<error>"};
  }

  Status ErrorOfExpand(const Strings& patterns) {
    Result<Strings> files = ExpandArtifactPatterns(root_.string(), patterns);
    EXPECT_FALSE(files.ok());
    return files.status();
  }

  fs::path base_;
  fs::path root_;
};

TEST_F(ArtifactPatternsTest, DoubleStarMatchesAnyDepth) {
  EXPECT_EQ(Expand({"**/*.html"}), (Strings{"docs/.hidden.html", "docs/guide/intro.html",
                                            "index.html", "out/index.html"}));
  EXPECT_EQ(Expand({"out/**/*.css"}), Strings{"out/assets/site.css"});
  EXPECT_EQ(Expand({"**/assets/*"}), (Strings{"out/assets/logo.png", "out/assets/site.css"}));
}

TEST_F(ArtifactPatternsTest, EverythingSkipsLinksThatLeaveTheRoot) {
  const Strings everything = {"README.md",
                              "docs/.hidden.html",
                              "docs/guide/intro.html",
                              "empty/.keep",
                              "index.html",
                              "inside_link.js",
                              "out/app.js",
                              "out/assets/logo.png",
                              "out/assets/site.css",
                              "out/index.html",
                              "server"};
  EXPECT_EQ(Expand({"**/*"}), everything);
  EXPECT_EQ(Expand({"**"}), everything);
  EXPECT_EQ(Expand({"."}), everything);
  EXPECT_EQ(Expand({"./"}), everything);
  // Named directly, a link out of the root is still skipped.
  EXPECT_EQ(Expand({"escape.html", "out/escape_relative.html", "base_link", "base_link/"}),
            Strings{});
  // Links to directories are not followed, even inside the root.
  EXPECT_EQ(Expand({"dir_link", "dir_link/*"}), Strings{});
  EXPECT_EQ(Expand({"dangling.html"}), Strings{});
}

TEST_F(ArtifactPatternsTest, DirectoryNameMeansEverythingUnderIt) {
  const Strings out = {"out/app.js", "out/assets/logo.png", "out/assets/site.css",
                       "out/index.html"};
  EXPECT_EQ(Expand({"out/"}), out);
  EXPECT_EQ(Expand({"out"}), out);
  EXPECT_EQ(Expand({"./out//"}), out);
  EXPECT_EQ(Expand({"out/**"}), out);
  EXPECT_EQ(Expand({"out/**/*"}), out);
  // A wildcard matches files, not directories: "out/*" is out's own files only.
  EXPECT_EQ(Expand({"out/*"}), (Strings{"out/app.js", "out/index.html"}));
  EXPECT_EQ(Expand({"o?t"}), Strings{});
  EXPECT_EQ(Expand({"docs/guide"}), Strings{"docs/guide/intro.html"});
}

TEST_F(ArtifactPatternsTest, PlainFileName) {
  EXPECT_EQ(Expand({"server"}), Strings{"server"});
  EXPECT_EQ(Expand({"./server"}), Strings{"server"});
  EXPECT_EQ(Expand({"out/assets/logo.png"}), Strings{"out/assets/logo.png"});
  EXPECT_EQ(Expand({"inside_link.js"}), Strings{"inside_link.js"});
  // A trailing '/' asks for a directory.
  EXPECT_EQ(Expand({"server/"}), Strings{});
}

TEST_F(ArtifactPatternsTest, SingleSegmentWildcards) {
  EXPECT_EQ(Expand({"*"}), (Strings{"README.md", "index.html", "inside_link.js", "server"}));
  EXPECT_EQ(Expand({"*.html"}), Strings{"index.html"});
  EXPECT_EQ(Expand({"?ndex.*"}), Strings{"index.html"});
  EXPECT_EQ(Expand({"s*r*r"}), Strings{"server"});
  EXPECT_EQ(Expand({"*/*.js"}), Strings{"out/app.js"});
  EXPECT_EQ(Expand({"out/assets/*.??g"}), Strings{"out/assets/logo.png"});
  EXPECT_EQ(Expand({"out/assets/*.?"}), Strings{});
}

TEST_F(ArtifactPatternsTest, SortsAndRemovesDuplicates) {
  EXPECT_EQ(Expand({"server", "out/*.js", "out/app.js", "**/app.js", "out", "server"}),
            (Strings{"out/app.js", "out/assets/logo.png", "out/assets/site.css", "out/index.html",
                     "server"}));
}

TEST_F(ArtifactPatternsTest, NoMatchGivesEmptyList) {
  EXPECT_EQ(Expand({"missing/*.zip"}), Strings{});
  EXPECT_EQ(Expand({"**/*.zip"}), Strings{});
  EXPECT_EQ(Expand({}), Strings{});
}

TEST_F(ArtifactPatternsTest, UsesBaseDirectoryAsRoot) {
  EXPECT_EQ(ExpandIn(root_ / "out", {"**/*"}),
            (Strings{"app.js", "assets/logo.png", "assets/site.css", "index.html"}));
  EXPECT_EQ(ExpandIn(root_ / "out", {"*.html"}), Strings{"index.html"});
  // A link that leaves the base directory is skipped even when it stays in the checkout.
  EXPECT_EQ(ExpandIn(root_ / "out", {"escape_relative.html"}), Strings{});
  // A root reached through a symbolic link works the same.
  EXPECT_EQ(ExpandIn(root_ / "dir_link", {"*.js"}), Strings{"app.js"});
}

TEST_F(ArtifactPatternsTest, RejectsPatternsThatLeaveTheRoot) {
  EXPECT_EQ(ErrorOfExpand({"out/*", "../outside.html"}),
            InvalidArgument("artifact pattern \"../outside.html\": must not contain \"..\", got "
                            "\"../outside.html\""));
  EXPECT_EQ(ErrorOfExpand({"out/../../outside.html"}),
            InvalidArgument("artifact pattern \"out/../../outside.html\": must not contain "
                            "\"..\", got \"out/../../outside.html\""));
  EXPECT_EQ(ErrorOfExpand({"/etc/passwd"}),
            InvalidArgument("artifact pattern \"/etc/passwd\": must be a relative path, got "
                            "\"/etc/passwd\""));
  EXPECT_EQ(ErrorOfExpand({""}), InvalidArgument("artifact pattern \"\": must not be empty"));
}

TEST_F(ArtifactPatternsTest, MissingRootIsNotFound) {
  const std::string missing = (root_ / "no-such-dir").string();
  Result<Strings> files = ExpandArtifactPatterns(missing, {"**/*"});
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status(),
            NotFound("the artifact directory \"" + missing + "\" is not a directory"));
  files = ExpandArtifactPatterns((root_ / "server").string(), {"**/*"});
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace bluegreen::pipeline
