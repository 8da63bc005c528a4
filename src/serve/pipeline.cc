#include "serve/pipeline.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/failpoint.h"
#include "pipeline/build_runner.h"
#include "pipeline/buildspec.h"
#include "pipeline/git.h"
#include "runtime/container_runtime.h"
#include "serve/webhook.h"

namespace bluegreen::serve {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr auto kGitTimeout = std::chrono::minutes(2);

json Stages(const store::ExecutionRecord& e) {
  json j = json::parse(e.stages.empty() ? "{}" : e.stages, nullptr, false);
  return j.is_object() ? j : json::object();
}

// Makes `stage` the current one, InProgress (or `status`), from now.
void BeginStage(store::ExecutionRecord* e, const std::string& stage,
                const std::string& status = "InProgress") {
  json j = Stages(*e);
  j[stage] = {{"status", status}, {"started_at", store::NowMillis()}};
  e->stage = stage;
  e->stages = j.dump();
}

void SetStageStatus(store::ExecutionRecord* e, const std::string& status, bool ended) {
  json j = Stages(*e);
  json& s = j[e->stage];
  if (!s.is_object()) s = {{"started_at", store::NowMillis()}};
  s["status"] = status;
  if (ended) s["ended_at"] = store::NowMillis();
  e->stages = j.dump();
}

// Text from a repository may be in any encoding: invalid UTF-8 becomes U+FFFD.
std::string CleanUtf8(const std::string& s) {
  return json::parse(json(s).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

bool Terminal(const std::string& status) {
  return status != "InProgress" && status != "WaitingForApproval";
}

// `dir` spelt one way: "/a/b/./c/" and "/a/b/c" are both "/a/b/c".
std::string NormalDir(const std::string& dir) {
  std::string out = fs::path(dir).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// The artifact directory a build of `version` makes: STATE/artifacts/STACK/VERSION.
std::string BuildDir(const Paths& paths, const std::string& stack, const std::string& version) {
  return fmt::format("{}/{}/{}", paths.artifacts_dir(), stack, version);
}

// The image a build of `version` makes: localhost/bluegreen/STACK:VERSION. An image name's parts
// cannot start or end with a dash, which a stack name can: those dashes are left out.
std::string ImageName(const std::string& stack, const std::string& version) {
  const size_t first = stack.find_first_not_of('-');
  const std::string repo = first == std::string::npos
                               ? "stack"
                               : stack.substr(first, stack.find_last_not_of('-') + 1 - first);
  return fmt::format("localhost/bluegreen/{}:{}", repo, version);
}

// Builds the image `tag` from the stack's Containerfile with the checkout `work` as the build
// context, through the stack's container engine; the engine's output goes to the build log.
Status BuildStackImage(const stack::StackSpec& spec, const std::string& work,
                       const std::string& tag, const std::string& log_path,
                       std::chrono::milliseconds timeout, const std::atomic<bool>* cancel) {
  const std::string flavor(stack::RuntimeName(spec.service.runtime));
  std::ofstream log(log_path, std::ios::app);
  log << fmt::format("[bluegreen] $ build image {} from {} ({})\n", tag, spec.build.containerfile,
                     flavor)
      << std::flush;
  const auto start = Clock::now();
  runtime::ContainerRuntime engine(runtime::ContainerRuntime::SocketFor(flavor), flavor);
  runtime::ImageBuildRequest req;
  req.context_dir = work;
  req.containerfile = spec.build.containerfile;
  req.tag = tag;
  req.timeout = timeout;
  req.output = [&log](std::string_view text) { log << text << std::flush; };
  req.cancel = cancel;
  Result<std::string> id = engine.BuildImage(req);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!id.ok()) {
    log << fmt::format("[bluegreen] the image build failed ({:.2f} s): {}\n", seconds,
                       id.status().message());
    return id.status();
  }
  log << fmt::format("[bluegreen] built image {} ({}) ({:.2f} s)\n", tag, *id, seconds);
  return Status::Ok();
}

}  // namespace

json ExecutionToJson(const store::ExecutionRecord& e) {
  json stages = Stages(e);
  for (auto& [name, s] : stages.items()) {
    if (s.contains("started_at") && s.contains("ended_at")) {
      s["duration_ms"] = s["ended_at"].get<int64_t>() - s["started_at"].get<int64_t>();
    }
  }
  return {{"id", e.number},
          {"stack", e.stack},
          {"kind", e.kind},
          {"trigger", e.trigger},
          {"commit", e.commit},
          {"commit_message", e.commit_subject},
          {"author", e.commit_author},
          {"version", e.version},
          {"status", e.status},
          {"stage", e.stage},
          {"stages", stages},
          {"reason", e.reason},
          {"deploy_services", e.deploy_services},
          {"from_version", e.from_version},
          {"approved_by", e.approved_by},
          {"comment", e.comment},
          {"created_at", e.created_at},
          {"updated_at", e.updated_at}};
}

Pipeline::Pipeline(store::Store* store, Paths paths, std::function<void()> wake,
                   int keep_versions)
    : store_(store), paths_(std::move(paths)), wake_(std::move(wake)),
      keep_versions_(keep_versions) {}

Pipeline::~Pipeline() { Stop(); }

std::string Pipeline::SecretPath(const std::string& stack, const std::string& key) const {
  return fmt::format("{}/secrets/{}/{}", paths_.state_dir, stack, key);
}

std::string Pipeline::ReadSecret(const std::string& stack, const std::string& key) const {
  std::ifstream in(SecretPath(stack, key));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

void Pipeline::Start() {
  // Interrupted Source/Build stages start again.
  Result<std::vector<store::ExecutionRecord>> active = store_->ListExecutions("", 1000, true);
  if (active.ok()) {
    for (const store::ExecutionRecord& e : *active) {
      if (e.stage == "Source" || e.stage == "Build") {
        spdlog::info("{}: execution {} was in {} when serve stopped; starting it again", e.stack,
                     e.number, e.stage);
        StartBuild(e);
      }
    }
  }
  poller_ = std::thread([this] { PollLoop(); });
}

void Pipeline::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !poller_.joinable() && builds_.empty()) return;
    stopping_ = true;
    for (auto& [id, b] : builds_) b.cancel->store(true);
  }
  cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  std::map<int64_t, Build> builds;
  {
    std::lock_guard lock(mu_);
    builds.swap(builds_);
  }
  for (auto& [id, b] : builds) {
    if (b.thread.joinable()) b.thread.join();
  }
}

void Pipeline::CancelStack(const std::string& stack) {
  std::lock_guard lock(mu_);
  for (auto& [id, b] : builds_) {
    if (b.stack == stack) b.cancel->store(true);
  }
}

void Pipeline::Reap() {
  std::vector<std::thread> done;
  {
    std::lock_guard lock(mu_);
    for (auto it = builds_.begin(); it != builds_.end();) {
      if (it->second.done) {
        done.push_back(std::move(it->second.thread));
        it = builds_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (std::thread& t : done) {
    if (t.joinable()) t.join();
  }
}

void Pipeline::OnFinished(int64_t id,
                          std::function<void(const store::ExecutionRecord&)> done) {
  std::lock_guard lock(waiters_mu_);
  Result<std::vector<store::ExecutionRecord>> recent = store_->ListExecutions("", 1000);
  if (recent.ok()) {
    for (const store::ExecutionRecord& e : *recent) {
      if (e.id == id && Terminal(e.status)) {
        done(e);
        return;
      }
    }
  }
  waiters_.emplace(id, std::move(done));
}

// Kills what a build of an earlier serve left running in its checkout (its commands run in
// sessions of their own, so they outlive serve).
static void KillProcessesUnder(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    fs::path cwd = fs::read_symlink(entry.path() / "cwd", ec);
    if (ec) continue;
    const std::string c = cwd.string();
    if (c == dir || c.starts_with(dir + "/")) {
      const pid_t pid = static_cast<pid_t>(std::stol(name));
      if (pid > 1 && pid != ::getpid()) {
        ::kill(-pid, SIGKILL);  // its group, if it leads one
        ::kill(pid, SIGKILL);
      }
    }
  }
}

void Pipeline::StartBuild(store::ExecutionRecord e) {
  Reap();
  std::lock_guard lock(mu_);
  if (stopping_) return;
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  Build& b = builds_[e.id];
  b.cancel = cancel;
  b.stack = e.stack;
  b.thread = std::thread([this, e, cancel]() mutable {
    RunSourceAndBuild(std::move(e), cancel);
  });
}

Result<store::ExecutionRecord> Pipeline::Release(const std::string& stack,
                                                 const std::string& trigger,
                                                 const std::string& sha, bool seen_head) {
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(stack);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value() || (*rec)->deleting) return NotFound("no stack named " + stack);
  Result<stack::StackSpec> spec = stack::ParseStackSpec((*rec)->spec_json);
  if (!spec.ok()) return spec.status();
  if (!spec->has_source()) {
    return FailedPrecondition(fmt::format(
        "stack {} has no source: add source.repo to its stack file, or deploy by hand with "
        "bluegreen deploy",
        stack));
  }
  store::ExecutionRecord e;
  e.stack = stack;
  e.trigger = trigger;
  e.commit = sha;
  e.status = "InProgress";
  BeginStage(&e, "Source");
  Result<store::ExecutionRecord> inserted =
      store_->InsertExecution(e, seen_head ? &sha : nullptr);
  if (!inserted.ok()) return inserted.status();
  (void)store_->AddEvent(stack, "execution_started",
                         fmt::format("execution {} started ({}{})", inserted->number, trigger,
                                     sha.empty() ? "" : ", commit " + sha.substr(0, 12)));
  StartBuild(*inserted);
  return inserted;
}

void Pipeline::Finish(store::ExecutionRecord* e, const std::string& status,
                      const std::string& reason) {
  SetStageStatus(e, status == "Succeeded" ? "Succeeded" : status, true);
  e->status = status;
  e->reason = reason;
  Status st = store_->UpdateExecution(e);
  if (!st.ok()) spdlog::error("{}: cannot record execution {}: {}", e->stack, e->number, st.message());
  {
    std::vector<std::function<void(const store::ExecutionRecord&)>> done;
    std::lock_guard lock(waiters_mu_);
    auto [first, last] = waiters_.equal_range(e->id);
    for (auto it = first; it != last; ++it) done.push_back(std::move(it->second));
    waiters_.erase(first, last);
    for (auto& f : done) f(*e);
  }
  (void)store_->AddEvent(e->stack, "execution_" + status,
                         fmt::format("execution {} {}{}", e->number, status,
                                     reason.empty() ? "" : ": " + reason));
  spdlog::info("{}: execution {} {}{}", e->stack, e->number, status,
               reason.empty() ? "" : ": " + reason);
}

void Pipeline::RunSourceAndBuild(store::ExecutionRecord e,
                                 std::shared_ptr<std::atomic<bool>> cancel) {
  auto fail = [&](const std::string& reason) {
    std::lock_guard lock(exec_mu_);
    Finish(&e, "Failed", reason);
  };
  auto done = [&] {
    {
      std::lock_guard lock(mu_);
      auto it = builds_.find(e.id);
      if (it != builds_.end()) it->second.done = true;
    }
    wake_();
  };
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(e.stack);
  if (!rec.ok() || !rec->has_value()) {
    fail("the stack was removed");
    return done();
  }
  Result<stack::StackSpec> spec = stack::ParseStackSpec((*rec)->spec_json);
  if (!spec.ok()) {
    fail("the stored stack file is invalid");
    return done();
  }
  pipeline::GitCredentials cred{ReadSecret(e.stack, "git_token")};
  const std::string work = fmt::format("{}/work/{}/{}", paths_.state_dir, e.stack, e.number);
  std::error_code ec;
  KillProcessesUnder(work);
  fs::remove_all(work, ec);
  fs::create_directories(fs::path(work).parent_path(), ec);

  // Source.
  const bool resumed = e.stage == "Build" || !Stages(e).value("Source", json::object()).empty();
  if (e.stage == "Build") BeginStage(&e, "Source");  // a resumed build starts over
  e.log_path = fmt::format("{}/{}/execution-{}.log", paths_.logs_dir(), e.stack, e.number);
  fs::create_directories(fs::path(e.log_path).parent_path(), ec);
  if (resumed && fs::exists(e.log_path, ec)) {
    std::ofstream(e.log_path, std::ios::app)
        << "[bluegreen] serve restarted during this execution: it starts over\n";
  }
  Failpoint("pipeline.source");  // the execution is recorded in Source; nothing checked out
  if (e.commit.empty()) {
    Result<std::string> head = pipeline::ResolveBranchHead(spec->source.repo, spec->source.branch,
                                                           cred, kGitTimeout);
    if (!head.ok()) {
      fail(pipeline::Redact(head.status().message(), cred.token));
      return done();
    }
    e.commit = *head;
  }
  Result<pipeline::CommitInfo> info = pipeline::Checkout(
      spec->source.repo, spec->source.branch, e.commit, work, cred, kGitTimeout);
  if (!info.ok()) {
    fail(pipeline::Redact(info.status().message(), cred.token));
    return done();
  }
  e.commit = info->sha;
  e.commit_subject = CleanUtf8(info->subject);
  e.commit_author = CleanUtf8(info->author);
  e.version = fmt::format("{}-{}", e.number, e.commit.substr(0, 7));
  {
    std::lock_guard lock(exec_mu_);
    SetStageStatus(&e, "Succeeded", true);
    BeginStage(&e, "Build");
    (void)store_->UpdateExecution(&e);
  }
  wake_();

  // Build.
  pipeline::BuildRequest req;
  req.workdir = work;
  req.log_path = e.log_path;
  req.timeout = spec->build.timeout;
  req.cancel = cancel.get();
  std::vector<std::string> artifact_paths = spec->build.artifacts;
  std::string artifact_root = work;
  bool from_buildspec = false;
  pipeline::BuildSpecFile buildspec;
  const bool builds_image = !spec->build.containerfile.empty();
  if (spec->service.runtime != stack::Runtime::kProcess && !builds_image) {
    fail(
        fmt::format("service.runtime {} runs images, and this build makes none: set "
                    "build.containerfile in the stack file",
                    stack::RuntimeName(spec->service.runtime)));
    return done();
  }
  std::ifstream buildspec_in;
  if (spec->build.commands.empty()) buildspec_in.open(work + "/buildspec.yml");
  if (!spec->build.commands.empty()) {
    req.commands = spec->build.commands;
  } else if (buildspec_in) {
    std::stringstream ss;
    ss << buildspec_in.rdbuf();
    Result<pipeline::BuildSpecFile> parsed = pipeline::ParseBuildSpec(ss.str());
    if (!parsed.ok()) {
      fail("buildspec.yml: " + parsed.status().message());
      return done();
    }
    buildspec = *parsed;
    req.commands = pipeline::AllCommands(buildspec);
    req.env = buildspec.env;
    from_buildspec = true;
    if (!buildspec.base_directory.empty()) artifact_root = work + "/" + buildspec.base_directory;
  } else if (!builds_image) {
    fail("the stack has no build.commands and the repository has no buildspec.yml");
    return done();
  }
  const std::string number = std::to_string(e.number);
  req.env.emplace_back("BLUEGREEN_COMMIT", e.commit);
  req.env.emplace_back("BLUEGREEN_BUILD_NUMBER", number);
  req.env.emplace_back("BLUEGREEN_VERSION", e.version);
  req.env.emplace_back("CODEBUILD_RESOLVED_SOURCE_VERSION", e.commit);
  req.env.emplace_back("CODEBUILD_BUILD_NUMBER", number);
  req.env.emplace_back("CODEBUILD_SRC_DIR", work);
  // The phases: one list for build.commands; for a buildspec, install, pre_build, build (then
  // its finally, whatever build did), post_build, each with its on-failure.
  struct Phase {
    std::vector<std::string> commands;
    bool continue_on_failure = false;
    bool is_finally = false;
  };
  std::vector<Phase> phases;
  if (from_buildspec) {
    using pipeline::OnFailure;
    phases.push_back({buildspec.install, buildspec.install_on_failure == OnFailure::kContinue});
    phases.push_back({buildspec.pre_build, buildspec.pre_build_on_failure == OnFailure::kContinue});
    phases.push_back({buildspec.build, buildspec.build_on_failure == OnFailure::kContinue});
    phases.push_back({buildspec.finally_build,
                      buildspec.build_on_failure == OnFailure::kContinue, true});
    phases.push_back({buildspec.post_build, buildspec.post_build_on_failure == OnFailure::kContinue});
  } else {
    phases.push_back({req.commands, false});
  }
  const auto build_deadline = Clock::now() + spec->build.timeout;
  auto time_left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(build_deadline - Clock::now());
  };
  auto timed_out = [&] {
    return Status(StatusCode::kDeadlineExceeded, fmt::format("the build took longer than {}",
                                                             FormatDuration(spec->build.timeout)));
  };
  Status st = Status::Ok();
  bool abort_after_finally = false;  // build failed with ABORT: its finally runs, then stop
  for (size_t i = 0; i < phases.size(); ++i) {
    const Phase& phase = phases[i];
    if (abort_after_finally && !phase.is_finally) break;
    if (phase.commands.empty()) continue;
    pipeline::BuildRequest one = req;
    one.commands = phase.commands;
    one.timeout = time_left();
    if (one.timeout.count() <= 0) {
      st = timed_out();
      break;
    }
    pipeline::BuildResult result;
    Status phase_st = pipeline::RunBuild(one, &result);
    if (!phase_st.ok() && st.ok()) st = phase_st;
    if (phase.is_finally && abort_after_finally) break;
    if (phase_st.ok()) continue;
    if (cancel->load() || phase_st.code() == StatusCode::kDeadlineExceeded) break;
    if (phase.continue_on_failure) continue;
    if (from_buildspec && i == 2) {
      abort_after_finally = true;
      continue;
    }
    break;
  }
  const std::string image = builds_image ? ImageName(e.stack, e.version) : "";
  if (st.ok() && builds_image) {
    st = time_left().count() > 0
             ? BuildStackImage(*spec, work, image, e.log_path, time_left(), cancel.get())
             : timed_out();
  }
  if (!st.ok()) {
    if (cancel->load()) {
      // serve is stopping (the build starts again at the next start) or the stack is gone.
      spdlog::info("{}: build of execution {} stopped", e.stack, e.number);
      std::lock_guard lock(mu_);
      if (!stopping_) {
        std::lock_guard lock2(exec_mu_);
        Finish(&e, "Failed", "cancelled: " + st.message());
      }
    } else {
      fail("build: " + st.message());
    }
    fs::remove_all(work, ec);
    return done();
  }
  // The version is registered, and the execution waits for its Deploy.
  auto built = [&](const store::VersionRecord& v) {
    Status put = store_->PutVersion(v);
    if (!put.ok()) {
      fail("cannot register the version: " + put.message());
      return done();
    }
    {
      std::lock_guard lock(exec_mu_);
      SetStageStatus(&e, "Succeeded", true);
      BeginStage(&e, "Deploy", "Waiting");
      (void)store_->UpdateExecution(&e);
    }
    spdlog::info("{}: execution {} built version {}", e.stack, e.number, e.version);
    PruneVersions(e.stack, *spec);
    done();
  };
  if (builds_image) {
    fs::remove_all(work, ec);
    return built(store::VersionRecord{e.stack, e.version, "", image, 0});
  }
  bool flatten = false;
  if (from_buildspec && !buildspec.artifact_files.empty()) {
    Result<std::vector<std::string>> files =
        pipeline::ExpandArtifactPatterns(artifact_root, buildspec.artifact_files);
    if (!files.ok() || files->empty()) {
      fail(files.ok() ? "artifacts: the buildspec's artifacts.files matched no file"
                      : "artifacts: " + files.status().message());
      fs::remove_all(work, ec);
      return done();
    }
    artifact_paths = *files;
    flatten = buildspec.discard_paths;
  }
  const std::string dest = BuildDir(paths_, e.stack, e.version);
  fs::create_directories(fs::path(dest).parent_path(), ec);
  fs::remove_all(dest, ec);
  if (flatten) {
    // discard-paths: every file by its name alone, in one directory.
    std::set<std::string> names;
    for (const std::string& f : artifact_paths) {
      if (!names.insert(fs::path(f).filename().string()).second) {
        fail("artifacts: discard-paths: two files are named " + fs::path(f).filename().string());
        fs::remove_all(work, ec);
        return done();
      }
    }
    const std::string flat = work + ".flat";
    fs::remove_all(flat, ec);
    fs::create_directories(flat, ec);
    for (const std::string& f : artifact_paths) {
      fs::copy_file(artifact_root + "/" + f, flat + "/" + fs::path(f).filename().string(), ec);
      if (ec) break;
    }
    st = ec ? Internal("artifacts: " + ec.message())
            : pipeline::CopyArtifacts(flat, {}, dest);
    fs::remove_all(flat, ec);
  } else {
    st = pipeline::CopyArtifacts(artifact_root, artifact_paths, dest);
  }
  fs::remove_all(work, ec);
  if (!st.ok()) {
    fail("artifacts: " + st.message());
    return done();
  }
  built(store::VersionRecord{e.stack, e.version, dest, "", 0});
}

void Pipeline::PruneVersions(const std::string& stack, const stack::StackSpec& spec) {
  if (keep_versions_ <= 0) return;
  const bool containers = spec.service.runtime != stack::Runtime::kProcess;
  const std::string stack_dir = fmt::format("{}/{}", paths_.artifacts_dir(), stack);
  struct Doomed {
    store::VersionRecord v;
    std::string moved;  // the artifact directory, renamed out of the way
  };
  std::vector<Doomed> doomed;
  {
    // ManualDeploy checks that a version exists and starts its rollout under this lock: a
    // version is either in use by the time it is looked at here, or gone before it is deployed.
    std::lock_guard lock(exec_mu_);
    Result<std::vector<store::VersionRecord>> versions = store_->ListVersions(stack);
    Result<std::vector<store::ServiceRecord>> services = store_->ListServices(stack);
    Result<std::vector<store::TaskRecord>> tasks = store_->ListTasks(stack);
    Result<std::vector<store::ExecutionRecord>> active = store_->ListExecutions(stack, 1000, true);
    Result<std::vector<store::StackRecord>> stacks = store_->ListStacks();
    if (!versions.ok() || !services.ok() || !tasks.ok() || !active.ok() || !stacks.ok()) return;
    std::set<std::string> in_use;
    for (const store::ServiceRecord& s : *services) {
      if (s.version) in_use.insert(*s.version);
      if (s.rollout_version) in_use.insert(*s.rollout_version);
    }
    for (const store::TaskRecord& t : *tasks) in_use.insert(t.version);
    for (const store::ExecutionRecord& e : *active) in_use.insert(e.version);
    // How many versions, of any stack, name each directory and image: a build that another
    // version also names (registered by hand with the build's path or tag) stays.
    std::map<std::string, int> refs;
    for (const store::StackRecord& other : *stacks) {
      Result<std::vector<store::VersionRecord>> vs =
          other.name == stack ? versions : store_->ListVersions(other.name);
      if (!vs.ok()) return;
      for (const store::VersionRecord& v : *vs) {
        if (!v.artifact_dir.empty()) {
          ++refs["dir:" + NormalDir(v.artifact_dir)];
        }
        if (!v.image.empty()) ++refs["image:" + v.image];
      }
    }
    int builds = 0;
    for (const store::VersionRecord& v : *versions) {  // newest first
      // Only what the pipeline built, at exactly the path or tag it builds to: an artifact
      // directory or image registered by hand is the user's.
      const bool built_dir = v.artifact_dir == BuildDir(paths_, stack, v.version);
      const bool built_image = !v.image.empty() && v.image == ImageName(stack, v.version);
      if (!built_dir && !built_image) continue;
      if (++builds <= keep_versions_ || in_use.contains(v.version)) continue;
      if (built_image && !containers) continue;  // no engine to ask while the stack runs processes
      if (refs[built_dir ? "dir:" + NormalDir(v.artifact_dir) : "image:" + v.image] > 1) {
        continue;
      }
      Status st = store_->DeleteVersion(stack, v.version);
      if (!st.ok()) {
        spdlog::warn("{}: cannot forget version {}: {}", stack, v.version, st.message());
        continue;
      }
      Doomed d{v, ""};
      if (built_dir) {
        // Out of the way at once (a rename is atomic): the name cannot be registered again with
        // this directory, and a crash before the removal leaves a ".removing-" directory that
        // the next clean-up removes.
        d.moved = stack_dir + "/.removing-" + v.version;
        std::error_code ec;
        fs::rename(v.artifact_dir, d.moved, ec);
        if (ec) d.moved = v.artifact_dir;
      }
      doomed.push_back(std::move(d));
    }
  }
  for (const Doomed& d : doomed) {
    const store::VersionRecord& v = d.v;
    std::string what;
    Status st = Status::Ok();
    if (!v.artifact_dir.empty()) {
      what = "artifact directory " + v.artifact_dir;
      std::error_code ec;
      fs::remove_all(d.moved, ec);
      if (ec) st = Internal(ec.message());
    } else {
      what = "image " + v.image;
      const std::string flavor(stack::RuntimeName(spec.service.runtime));
      st = runtime::ContainerRuntime(runtime::ContainerRuntime::SocketFor(flavor), flavor)
               .RemoveImage(v.image);
    }
    std::string outcome;
    if (st.code() == StatusCode::kNotFound) {
      outcome = " (which the engine no longer had)";
    } else if (!st.ok()) {
      outcome = " (which failed: " + st.message() + ")";
      spdlog::warn("{}: version {}: cannot remove its {}: {}", stack, v.version, what,
                   st.message());
    }
    const std::string message =
        fmt::format("version {} removed with its {}{} (builds kept: the newest {} and those in use)",
                    v.version, what, outcome, keep_versions_);
    (void)store_->AddEvent(stack, "version_removed", message);
    spdlog::info("{}: {}", stack, message);
  }
  // Directories a crash left half removed.
  std::error_code ec;
  for (fs::directory_iterator it(stack_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with(".removing-")) {
      std::error_code rm;
      fs::remove_all(it->path(), rm);
    }
  }
}

void Pipeline::PollLoop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
      if (stopping_) return;
    }
    Result<std::vector<store::StackRecord>> stacks = store_->ListStacks();
    if (!stacks.ok()) continue;
    for (const store::StackRecord& s : *stacks) {
      if (s.deleting) continue;
      Result<stack::StackSpec> spec = stack::ParseStackSpec(s.spec_json);
      if (!spec.ok() || !spec->has_source()) continue;
      auto it = next_poll_.find(s.name);
      const auto now = Clock::now();
      if (it != next_poll_.end() && now < it->second) continue;
      next_poll_[s.name] = now + spec->source.poll_interval;
      pipeline::GitCredentials cred{ReadSecret(s.name, "git_token")};
      Result<std::string> head = pipeline::ResolveBranchHead(
          spec->source.repo, spec->source.branch, cred, std::chrono::seconds(30));
      if (!head.ok()) {
        spdlog::warn("{}: cannot poll {}: {}", s.name, pipeline::DisplayRepo(spec->source.repo),
                     pipeline::Redact(head.status().message(), cred.token));
        continue;
      }
      if (*head == s.last_commit) continue;
      // The execution and the head it builds are recorded together: a crash cannot build the
      // commit twice, nor not at all.
      Result<store::ExecutionRecord> e =
          Release(s.name, s.last_commit.empty() ? "first" : "poll", *head, /*seen_head=*/true);
      if (!e.ok() && e.status().code() == StatusCode::kAlreadyExists) continue;  // the webhook's
      if (!e.ok()) {
        spdlog::error("{}: cannot start an execution: {}", s.name, e.status().message());
        continue;
      }
    }
  }
}

Result<std::optional<store::ExecutionRecord>> Pipeline::Webhook(const std::string& stack,
                                                                const std::string& signature,
                                                                const std::string& body) {
  const std::string secret = ReadSecret(stack, "webhook_secret");
  if (secret.empty()) {
    return Status(StatusCode::kUnauthenticated,
                  "no webhook secret is set for this stack (bluegreen secret set " + stack +
                      " webhook_secret)");
  }
  if (!WebhookSignatureMatches(secret, body, signature)) {
    return Status(StatusCode::kUnauthenticated, "missing or wrong X-Hub-Signature-256");
  }
  Result<PushEvent> event = ParsePushEvent(body);
  if (!event.ok()) return event.status();
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(stack);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value()) return NotFound("no stack named " + stack);
  Result<stack::StackSpec> spec = stack::ParseStackSpec((*rec)->spec_json);
  if (!spec.ok()) return spec.status();
  Result<std::optional<std::string>> commit =
      CommitToBuild(*event, spec->source.branch, (*rec)->last_commit);
  if (!commit.ok()) return commit.status();
  if (!commit->has_value()) return std::optional<store::ExecutionRecord>();
  const std::string& after = **commit;
  Result<store::ExecutionRecord> e = Release(stack, "webhook", after, /*seen_head=*/true);
  if (!e.ok() && e.status().code() == StatusCode::kAlreadyExists) {
    return std::optional<store::ExecutionRecord>();  // the poller saw it first
  }
  if (!e.ok()) return e.status();
  return std::optional<store::ExecutionRecord>(*e);
}

Result<store::ExecutionRecord> Pipeline::Approve(const std::string& stack, const std::string& who,
                                                 const std::string& comment) {
  std::lock_guard lock(exec_mu_);
  Result<std::vector<store::ExecutionRecord>> active = store_->ListExecutions(stack, 100, true);
  if (!active.ok()) return active.status();
  for (store::ExecutionRecord e : *active) {
    if (e.status != "WaitingForApproval") continue;
    e.approved_by = who;
    e.comment = comment;
    SetStageStatus(&e, "Approved", true);
    BeginStage(&e, "Swap");
    e.status = "InProgress";
    BG_RETURN_IF_ERROR(store_->UpdateExecution(&e));
    (void)store_->AddEvent(stack, "approved",
                           fmt::format("execution {} (version {}) approved by {}{}", e.number,
                                       e.version, who, comment.empty() ? "" : ": " + comment));
    wake_();
    return e;
  }
  return FailedPrecondition("no execution of " + stack + " is waiting for approval");
}

Result<store::ExecutionRecord> Pipeline::Reject(const std::string& stack, const std::string& who,
                                                const std::string& comment) {
  std::lock_guard lock(exec_mu_);
  Result<std::vector<store::ExecutionRecord>> active = store_->ListExecutions(stack, 100, true);
  if (!active.ok()) return active.status();
  for (store::ExecutionRecord e : *active) {
    if (e.status != "WaitingForApproval") continue;
    e.approved_by = who;
    e.comment = comment;
    Finish(&e, "Rejected", fmt::format("rejected by {}{}", who, comment.empty() ? "" : ": " + comment));
    return e;
  }
  return FailedPrecondition("no execution of " + stack + " is waiting for approval");
}

Result<store::ExecutionRecord> Pipeline::Rollback(const std::string& stack, const std::string& who,
                                                  const std::string& comment) {
  std::lock_guard lock(exec_mu_);
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(stack);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value() || (*rec)->deleting) return NotFound("no stack named " + stack);
  Result<std::vector<store::ExecutionRecord>> recent = store_->ListExecutions(stack, 1000);
  if (!recent.ok()) return recent.status();
  for (const store::ExecutionRecord& e : *recent) {
    if (!Terminal(e.status) && (e.stage == "Deploy" || e.stage == "Review" || e.stage == "Swap")) {
      return FailedPrecondition(fmt::format(
          "execution {} is in {} ({}): a rollback now would make an unapproved version live; "
          "reject it first (bluegreen reject {})",
          e.number, e.stage, e.status, stack));
    }
  }
  // The last swap tells what production ran before it.
  const store::ExecutionRecord* last_swap = nullptr;
  for (const store::ExecutionRecord& e : *recent) {
    if (e.status == "Succeeded" && !e.swap_from.empty()) {
      last_swap = &e;
      break;
    }
  }
  if (last_swap == nullptr) return FailedPrecondition("nothing to roll back: no swap happened yet");
  Result<std::vector<store::ServiceRecord>> services = store_->ListServices(stack);
  if (!services.ok()) return services.status();
  const std::string test_side = OtherSide((*rec)->live);
  std::string test_version, live_version;
  for (const store::ServiceRecord& s : *services) {
    if (s.identifier == test_side) test_version = s.version.value_or("");
    if (s.identifier == (*rec)->live) live_version = s.version.value_or("");
  }
  if (test_version != last_swap->from_version) {
    return FailedPrecondition(fmt::format(
        "the test side ({}) runs {}, not {} which production ran before the last swap; a "
        "rollback would make it live without approval",
        test_side, test_version.empty() ? "nothing" : test_version, last_swap->from_version));
  }
  store::ExecutionRecord e;
  e.stack = stack;
  e.kind = "rollback";
  e.trigger = "rollback";
  e.version = test_version;
  e.status = "InProgress";
  e.approved_by = who;
  e.comment = comment;
  // The version's commit, when an execution built it.
  for (const store::ExecutionRecord& x : *recent) {
    if (x.kind == "release" && x.version == test_version) {
      e.commit = x.commit;
      e.commit_subject = x.commit_subject;
      e.commit_author = x.commit_author;
      break;
    }
  }
  BeginStage(&e, "Swap");
  Result<store::ExecutionRecord> inserted = store_->InsertExecution(e);
  if (!inserted.ok()) return inserted.status();
  (void)store_->AddEvent(stack, "rollback",
                         fmt::format("rollback to {} asked by {}{}", test_version, who,
                                     comment.empty() ? "" : ": " + comment));
  wake_();
  return inserted;
}

std::set<std::string> Pipeline::Advance(const std::vector<store::StackRecord>& stacks,
                                        const json& proxy_state, const ProxyClient& proxy) {
  std::lock_guard lock(exec_mu_);
  for (const store::StackRecord& s : stacks) {
    if (s.deleting) continue;
    Result<stack::StackSpec> spec = stack::ParseStackSpec(s.spec_json);
    if (!spec.ok()) continue;
    AdvanceStack(s, *spec, proxy_state, proxy);
  }
  std::set<std::string> frozen;
  Result<std::vector<store::ExecutionRecord>> active = store_->ListExecutions("", 1000, true);
  if (active.ok()) {
    for (const store::ExecutionRecord& e : *active) {
      if (e.stage == "Swap") frozen.insert(e.stack);
    }
  } else {
    for (const store::StackRecord& s : stacks) frozen.insert(s.name);  // unknown: touch nothing
  }
  return frozen;
}

void Pipeline::FailActive(const std::string& stack, const std::string& reason) {
  std::lock_guard lock(exec_mu_);
  Result<std::vector<store::ExecutionRecord>> active = store_->ListExecutions(stack, 1000, true);
  if (!active.ok()) return;
  for (store::ExecutionRecord e : *active) Finish(&e, "Failed", reason);
}

Result<std::vector<std::string>> Pipeline::ManualDeploy(const std::string& stack,
                                                        const std::string& version) {
  std::lock_guard lock(exec_mu_);
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(stack);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value() || (*rec)->deleting) return NotFound("no stack named " + stack);
  Result<stack::StackSpec> spec = stack::ParseStackSpec((*rec)->spec_json);
  if (!spec.ok()) return spec.status();
  Result<std::optional<store::VersionRecord>> v = store_->GetVersion(stack, version);
  if (!v.ok()) return v.status();
  if (!v->has_value()) {
    return NotFound(fmt::format("version {} of {} is not registered: register it first "
                                "(bluegreen deploy {} --version {} --artifact DIR)",
                                version, stack, stack, version));
  }
  const bool process = spec->service.runtime == stack::Runtime::kProcess;
  if (process && (*v)->artifact_dir.empty()) {
    return InvalidArgument(fmt::format(
        "version {} is an image; stack {} runs processes and needs an artifact directory",
        version, stack));
  }
  if (!process && (*v)->image.empty()) {
    return InvalidArgument(fmt::format(
        "version {} is an artifact directory; stack {} runs containers and needs an image",
        version, stack));
  }
  Result<std::vector<store::ExecutionRecord>> active = store_->ListExecutions(stack, 1000, true);
  if (!active.ok()) return active.status();
  for (const store::ExecutionRecord& e : *active) {
    if (e.stage == "Deploy" || e.stage == "Review" || e.stage == "Swap") {
      const json st = Stages(e).value(e.stage, json::object());
      if (e.stage == "Deploy" && st.value("status", "") == "Waiting") continue;
      return FailedPrecondition(fmt::format(
          "execution {} of the pipeline is in {}; a deploy by hand now would race it", e.number,
          e.stage));
    }
  }
  Result<std::vector<store::ServiceRecord>> services = store_->ListServices(stack);
  if (!services.ok()) return services.status();
  bool any_version = false;
  for (const store::ServiceRecord& s : *services) {
    if (s.rollout_state == "in_progress") {
      return FailedPrecondition(fmt::format("{} is already rolling out version {}; wait for it",
                                            s.identifier, s.rollout_version.value_or("?")));
    }
    any_version |= s.version.has_value();
  }
  // Only the side behind the test listener changes, except on the very first deploy.
  const std::string test_side = OtherSide((*rec)->live);
  std::vector<std::string> targets;
  for (store::ServiceRecord s : *services) {
    if (any_version && s.identifier != test_side) continue;
    if (s.version == version) continue;
    s.rollout_version = version;
    s.rollout_state = "in_progress";
    s.rollout_error.clear();
    s.rollout_started_at = store::NowSeconds();
    BG_RETURN_IF_ERROR(store_->PutService(s));
    targets.push_back(s.identifier);
    (void)store_->AddEvent(stack, "rollout_started",
                           fmt::format("putting version {} on {} (by hand)", version, s.identifier));
  }
  wake_();
  return targets;
}

void Pipeline::AdvanceStack(const store::StackRecord& stack, const stack::StackSpec& spec,
                            const json& proxy_state, const ProxyClient& proxy) {
  Result<std::vector<store::ExecutionRecord>> active_or =
      store_->ListExecutions(stack.name, 1000, true);
  if (!active_or.ok()) return;
  std::vector<store::ExecutionRecord> active = std::move(active_or).value();  // newest first
  Result<std::vector<store::ServiceRecord>> services_or = store_->ListServices(stack.name);
  if (!services_or.ok()) return;
  std::map<std::string, store::ServiceRecord> services;
  for (const store::ServiceRecord& s : *services_or) services[s.identifier] = s;

  // Swap first: a swap in flight must finish before anything else looks at the proxy.
  for (store::ExecutionRecord& e : active) {
    if (e.stage == "Swap" && e.status == "InProgress") {
      DoSwap(e, stack, proxy_state, proxy);
      return;
    }
  }

  store::ExecutionRecord* holder = nullptr;  // the one in Deploy (running) or Review
  for (store::ExecutionRecord& e : active) {
    const json st = Stages(e).value(e.stage, json::object());
    if ((e.stage == "Deploy" && st.value("status", "") == "InProgress") || e.stage == "Review") {
      holder = &e;
      break;
    }
  }

  // Review: timeouts.
  if (holder != nullptr && holder->status == "WaitingForApproval") {
    const json st = Stages(*holder).value("Review", json::object());
    const int64_t started = st.value("started_at", int64_t{0});
    const int64_t limit =
        std::chrono::duration_cast<std::chrono::milliseconds>(spec.approval.timeout).count();
    if (started > 0 && store::NowMillis() - started > limit) {
      if (spec.approval.on_timeout == stack::TimeoutAction::kApprove) {
        holder->approved_by = "timeout";
        SetStageStatus(holder, "Approved", true);
        BeginStage(holder, "Swap");
        holder->status = "InProgress";
        (void)store_->UpdateExecution(holder);
        wake_();
      } else {
        holder->approved_by = "timeout";
        Finish(holder, "Rejected", "the approval timed out");
      }
      return;
    }
  }

  // A newer build ready to deploy supersedes an execution waiting in Review; it waits while
  // another one deploys.
  store::ExecutionRecord* ready = nullptr;
  for (store::ExecutionRecord& e : active) {
    const json st = Stages(e).value(e.stage, json::object());
    if (e.stage == "Deploy" && st.value("status", "") == "Waiting") {
      if (ready == nullptr) {
        ready = &e;
      } else {
        Finish(&e, "Superseded", fmt::format("superseded by execution {}", ready->number));
      }
    }
  }
  // A slow older build must not deploy over (or after) a newer one: production never goes back
  // to an older commit by the pipeline.
  if (ready != nullptr) {
    int64_t newest_deployed = 0;
    Result<std::vector<store::ExecutionRecord>> recent = store_->ListExecutions(stack.name, 1000);
    if (recent.ok()) {
      for (const store::ExecutionRecord& e : *recent) {
        if (e.kind == "release" && !e.deploy_services.empty()) {
          newest_deployed = std::max(newest_deployed, e.number);
        }
      }
    }
    if (ready->number < newest_deployed) {
      Finish(ready, "Superseded",
             fmt::format("execution {} was deployed already; this older build is not", newest_deployed));
      ready = nullptr;
    }
  }
  if (ready != nullptr && holder != nullptr && holder->status == "WaitingForApproval" &&
      holder->number < ready->number) {
    Finish(holder, "Superseded", fmt::format("superseded by execution {}", ready->number));
    holder = nullptr;
  }
  if (ready != nullptr && holder == nullptr) {
    // Deploy: decided from the store, under the pipeline's lock.
    bool any_version = false;
    for (const auto& [id, s] : services) any_version |= s.version.has_value();
    std::vector<std::string> targets;
    if (any_version) {
      targets.push_back(OtherSide(stack.live));
    } else {
      targets = {"Code1", "Code2"};
    }
    ready->deploy_services.clear();
    for (const std::string& id : targets) {
      ready->deploy_services += (ready->deploy_services.empty() ? "" : ",") + id;
    }
    SetStageStatus(ready, "InProgress", false);
    (void)store_->UpdateExecution(ready);
    for (const std::string& id : targets) {
      store::ServiceRecord svc = services[id];
      svc.rollout_version = ready->version;
      svc.rollout_state = "in_progress";
      svc.rollout_error.clear();
      svc.rollout_started_at = store::NowSeconds();
      (void)store_->PutService(svc);
    }
    (void)store_->AddEvent(stack.name, "rollout_started",
                           fmt::format("execution {}: putting {} on {}", ready->number,
                                       ready->version, ready->deploy_services));
    wake_();
    return;
  }

  // Deploy in progress: done when every target service runs the version; failed with its
  // rollout.
  if (holder != nullptr && holder->stage == "Deploy") {
    bool all_done = true;
    std::string failure;
    std::stringstream ids(holder->deploy_services);
    std::string id;
    while (std::getline(ids, id, ',')) {
      store::ServiceRecord& svc = services[id];
      if (svc.rollout_state == "failed" && svc.rollout_version == holder->version) {
        failure = svc.rollout_error;
      }
      if (svc.version != holder->version && svc.rollout_version != holder->version) {
        // serve died between recording the deploy and starting its rollout: start it now.
        svc.rollout_version = holder->version;
        svc.rollout_state = "in_progress";
        svc.rollout_error.clear();
        svc.rollout_started_at = store::NowSeconds();
        (void)store_->PutService(svc);
        wake_();
      }
      if (svc.version != holder->version || svc.rollout_state == "in_progress") all_done = false;
    }
    if (!failure.empty()) {
      Finish(holder, "Failed", "deploy: " + failure + "; production was not touched");
      return;
    }
    if (!all_done) return;
    SetStageStatus(holder, "Succeeded", true);
    if (holder->deploy_services.find(',') != std::string::npos) {
      // The first run: both sides run it; production already serves it.
      Finish(holder, "Succeeded", "first run: both sides run " + holder->version);
      return;
    }
    if (spec.approval.mode == stack::ApprovalMode::kAuto) {
      holder->approved_by = "auto";
      BeginStage(holder, "Review");
      SetStageStatus(holder, "Approved", true);
      BeginStage(holder, "Swap");
      (void)store_->UpdateExecution(holder);
      wake_();
      return;
    }
    BeginStage(holder, "Review", "WaitingForApproval");
    holder->status = "WaitingForApproval";
    (void)store_->UpdateExecution(holder);
    (void)store_->AddEvent(stack.name, "waiting_for_approval",
                           fmt::format("execution {}: version {} waits for approval on the test "
                                       "listener (port {})",
                                       holder->number, holder->version,
                                       spec.load_balancer.test.port));
  }
}

void Pipeline::DoSwap(store::ExecutionRecord e, const store::StackRecord& stack,
                      const json& proxy_state, const ProxyClient& proxy) {
  // The swap's `expect` is fixed when it begins and kept, so a retry after a crash asks the
  // proxy the same question and can never swap back.
  if (e.swap_from.empty()) {
    Result<std::vector<store::ServiceRecord>> services = store_->ListServices(stack.name);
    if (!services.ok()) return;
    const std::string test_side = OtherSide(stack.live);
    std::string test_version, live_version;
    bool rolling = false;
    for (const store::ServiceRecord& s : *services) {
      if (s.identifier == test_side) test_version = s.version.value_or("");
      if (s.identifier == stack.live) live_version = s.version.value_or("");
      if (s.identifier == test_side && s.rollout_state == "in_progress") rolling = true;
    }
    if (rolling || test_version != e.version) {
      Finish(&e, "Failed",
             fmt::format("the test side ({}) runs {}, not the approved version {}; nothing was "
                         "swapped",
                         test_side, test_version.empty() ? "nothing" : test_version, e.version));
      return;
    }
    // Health gate: at least one healthy target behind the test listener.
    int healthy = 0;
    const std::string group = TargetGroupName(stack.name, test_side);
    for (const json& g : proxy_state.value("target_groups", json::array())) {
      if (g.value("name", "") != group) continue;
      for (const json& t : g.value("targets", json::array())) {
        if (t.value("health", "") == "healthy") ++healthy;
      }
    }
    if (healthy == 0) {
      Finish(&e, "Failed",
             fmt::format("the test side ({}) has no healthy target; nothing was swapped",
                         test_side));
      return;
    }
    e.swap_from = stack.live;
    e.from_version = live_version;
    if (!store_->UpdateExecution(&e).ok()) return;
    Failpoint("pipeline.swap.recorded");  // the swap's `expect` is stored, the proxy untouched
  }
  const std::string from = e.swap_from;
  const std::string to = OtherSide(from);
  if (stack.live == from) {
    Result<bool> swapped = proxy.Swap(ProxyListenerName(stack.name, "production"),
                                      ProxyListenerName(stack.name, "test"),
                                      TargetGroupName(stack.name, from),
                                      TargetGroupName(stack.name, to));
    if (!swapped.ok()) {
      if (swapped.status().code() == StatusCode::kFailedPrecondition) {
        Finish(&e, "Failed", "the proxy refused the swap: " + swapped.status().message());
      } else {
        spdlog::warn("{}: swap of execution {}: {}; retrying", stack.name, e.number,
                     swapped.status().message());
      }
      return;
    }
    Failpoint("pipeline.swap.applied");  // the proxy swapped; the store still says `from`
    Status st = store_->SetLive(stack.name, to);
    if (!st.ok()) {
      spdlog::error("{}: the swap happened but cannot be recorded: {}", stack.name, st.message());
      return;
    }
    spdlog::info("{}: swapped: production -> {} ({}){}", stack.name, to, e.version,
                 *swapped ? "" : " (the proxy had already swapped)");
    Failpoint("pipeline.swap.live_recorded");  // live side stored; the execution not finished
  }
  Finish(&e, "Succeeded",
         fmt::format("{} is live on {} (was {})", e.version, to,
                     e.from_version.empty() ? "nothing" : e.from_version));
  wake_();
}

}  // namespace bluegreen::serve
