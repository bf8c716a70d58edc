#include "manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <utility>
#include <vector>

#include "errors.h"
#include "files.h"
#include "json.h"
#include "sha256.h"

namespace ek {
namespace {

const char * kManifest = "edgekit.json";
const char * kSealAlgorithm = "sha256/rfc8785";
constexpr size_t kMaxManifestBytes = 16u << 20;
constexpr int64_t kMaxSide = 16384;

bool sealed(const std::string & key) { return key != "seal" && key != "signature"; }

Json string_json(const std::string & s) { Json j; j.type = Json::String; j.text = s; return j; }

// RFC 6901 pointer for messages: /parts/decoder.
std::string pointer(const std::vector<std::string> & path) {
    std::string out;
    for (const auto & p : path) {
        out += '/';
        for (char c : p) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
    }
    return out;
}

using FieldDigests = std::vector<std::pair<std::vector<std::string>, std::string>>;

// Every field to depth 2 with the sha256 of its canonical form, sorted by path (edgekit.bundle.seal.field_digests).
FieldDigests field_digests(const Json & body) {
    FieldDigests out;
    for (const auto & kv : body.members) {
        if (kv.second.type == Json::Object && !kv.second.members.empty()) {
            for (const auto & sub : kv.second.members)
                out.push_back({{kv.first, sub.first}, sha256_hex(canonical_json(sub.second))});
        } else {
            out.push_back({{kv.first}, sha256_hex(canonical_json(kv.second))});
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

Json seal_json(const Json & body, const FieldDigests & fields) {
    Json seal;
    seal.type = Json::Object;
    seal.members["algorithm"] = string_json(kSealAlgorithm);
    seal.members["sha256"] = string_json(sha256_hex(canonical_json(body)));
    Json list;
    list.type = Json::Array;
    for (const auto & f : fields) {
        Json path, entry;
        path.type = Json::Array;
        for (const auto & p : f.first) path.items.push_back(string_json(p));
        entry.type = Json::Array;
        entry.items = {path, string_json(f.second)};
        list.items.push_back(entry);
    }
    seal.members["fields"] = list;
    return seal;
}

void check_seal(const Json & m) {
    if (!m.has("seal") || !m.at("seal").has("fields") || m.at("seal").at("fields").type != Json::Array)
        throw Error(EK_ERR_MANIFEST, "edgekit.json has no seal: it was edited, or written by an older edgekit; rebuild the bundle");
    Json body;
    body.type = Json::Object;
    for (const auto & kv : m.members) if (sealed(kv.first)) body.members.insert(kv);
    FieldDigests now;
    std::string computed;
    try {
        now = field_digests(body);
        computed = canonical_json(seal_json(body, now));
    } catch (const std::runtime_error & e) {
        throw Error(EK_ERR_MANIFEST, std::string("edgekit.json: cannot be canonicalised (") + e.what() + "); rebuild the bundle");
    }
    const Json & seal = m.at("seal");
    std::string stored;
    try {
        stored = canonical_json(seal);
    } catch (const std::runtime_error &) {
    }
    if (stored == computed) return;
    if (!seal.has("algorithm") || seal.at("algorithm").type != Json::String || seal.at("algorithm").text != kSealAlgorithm)
        throw Error(EK_ERR_MANIFEST, std::string("edgekit.json: the seal's algorithm is not ") + kSealAlgorithm + "; rebuild the bundle");
    if (seal.has("sha256") && seal.at("sha256").type == Json::String &&
        seal.at("sha256").text == sha256_hex(canonical_json(body)))  // the manifest is intact: the seal was edited
        throw Error(EK_ERR_MANIFEST, "edgekit.json: the seal does not match the manifest (the seal itself was edited)");
    std::map<std::vector<std::string>, std::string> old;
    for (const Json & entry : seal.at("fields").items) {
        if (entry.type != Json::Array || entry.items.size() != 2 || entry.items[0].type != Json::Array ||
            entry.items[1].type != Json::String) continue;
        std::vector<std::string> path;
        for (const Json & p : entry.items[0].items) path.push_back(p.type == Json::String ? p.text : "?");
        old[path] = entry.items[1].text;
    }
    for (const auto & f : now) {
        auto it = old.find(f.first);
        if (it == old.end())
            throw Error(EK_ERR_MANIFEST, "edgekit.json: manifest field " + pointer(f.first) + " was added after the build");
        if (it->second != f.second)
            throw Error(EK_ERR_MANIFEST, "edgekit.json: manifest field " + pointer(f.first) +
                        " was edited after the build (it differs from the seal)");
    }
    for (const auto & kv : old) {
        bool present = std::any_of(now.begin(), now.end(), [&](const auto & f) { return f.first == kv.first; });
        if (!present)
            throw Error(EK_ERR_MANIFEST, "edgekit.json: manifest field " + pointer(kv.first) + " was removed after the build");
    }
    throw Error(EK_ERR_MANIFEST, "edgekit.json: the seal does not match the manifest (the seal itself was edited)");
}

// Relative, normalised, inside the bundle: no absolute path, no '..', no empty or '.' component.
void check_relpath(const std::string & rel, const std::string & what) {
    bool bad = rel.empty() || rel[0] == '/' || rel.find('\\') != std::string::npos || rel.find('\0') != std::string::npos;
    std::stringstream parts(rel);
    std::string part;
    while (!bad && std::getline(parts, part, '/')) bad = part.empty() || part == "." || part == "..";
    if (!bad && rel.back() == '/') bad = true;
    if (bad) throw Error(EK_ERR_MANIFEST, "edgekit.json: " + what + ": unsafe path '" + rel + "'");
}

const Json & need(const Json & obj, const std::string & key, const std::string & where) {
    if (!obj.has(key)) throw Error(EK_ERR_MANIFEST, "edgekit.json: " + where + " has no '" + key + "'");
    return obj.at(key);
}

std::string need_string(const Json & obj, const std::string & key, const std::string & where) {
    const Json & v = need(obj, key, where);
    if (v.type != Json::String) throw Error(EK_ERR_MANIFEST, "edgekit.json: " + where + "." + key + " must be a string");
    return v.text;
}

int64_t need_int(const Json & v, const std::string & where, int64_t lo, int64_t hi) {
    int64_t n = 0;
    try {
        n = v.integer();
    } catch (const std::exception &) {
        throw Error(EK_ERR_MANIFEST, "edgekit.json: " + where + " must be a whole number");
    }
    if (n < lo || n > hi)
        throw Error(EK_ERR_MANIFEST, "edgekit.json: " + where + " is " + std::to_string(n) + "; it must be from " +
                    std::to_string(lo) + " to " + std::to_string(hi));
    return n;
}

void open_artifacts(Bundle & b, const Json & artifacts, bool verify) {
    if (artifacts.type != Json::Object) throw Error(EK_ERR_MANIFEST, "edgekit.json: 'artifacts' must be an object");
    for (const auto & kv : artifacts.members) {
        const std::string & rel = kv.first;
        check_relpath(rel, "artifacts");
        int64_t size = need_int(need(kv.second, "size", "artifacts." + rel), "artifacts." + rel + ".size", 0, int64_t(1) << 50);
        std::string digest = need_string(kv.second, "sha256", "artifacts." + rel);
        int fd = open_beneath(b.root_fd, rel);  // no link at any component, regular file only
        b.fds[rel] = fd;
        struct stat st;
        if (fstat(fd, &st) != 0) throw Error(EK_ERR_IO, rel + ": cannot be read");
        if (int64_t(st.st_size) != size)
            throw Error(EK_ERR_INTEGRITY, rel + ": size " + std::to_string(st.st_size) + " differs from the manifest (modified or truncated)");
        if (verify && sha256_fd(fd, rel) != digest)
            throw Error(EK_ERR_INTEGRITY, rel + ": sha256 differs from the manifest (modified or corrupt); refusing to load it");
    }
}

std::string part_path(const Json & parts, const Json & artifacts, const std::string & name, const std::string & format) {
    if (!parts.has(name)) throw Error(EK_ERR_UNSUPPORTED, "bundle has no " + name + " part; build it with --backend gguf");
    const Json & part = parts.at(name);
    std::string fmt = part.has("format") && part.at("format").type == Json::String ? part.at("format").text : "";
    if (fmt != format)
        throw Error(EK_ERR_UNSUPPORTED, "parts." + name + " is '" + fmt + "', not '" + format +
                    "': this host runs GGUF bundles (build with --backend gguf)");
    std::string rel = need_string(part, "path", "parts." + name);
    check_relpath(rel, "parts." + name);
    if (!artifacts.has(rel)) throw Error(EK_ERR_MANIFEST, "parts." + name + ": '" + rel + "' is not a hashed artifact");
    return rel;
}

Json read_manifest(const Bundle & b) {
    int fd = open_beneath(b.root_fd, kManifest);
    std::string text;
    try {
        text = read_fd(fd, kMaxManifestBytes, std::string(kManifest));
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    try {
        return parse_json(text);
    } catch (const std::runtime_error & e) {
        throw Error(EK_ERR_MANIFEST, b.dir + "/" + kManifest + ": not valid JSON (" + e.what() + ")");
    }
}

}  // namespace

Bundle & Bundle::operator=(Bundle && other) noexcept {
    if (this != &other) {
        close();
        dir = std::move(other.dir);
        decoder_rel = std::move(other.decoder_rel);
        mmproj_rel = std::move(other.mmproj_rel);
        width = other.width;
        height = other.height;
        context = other.context;
        max_position = other.max_position;
        resample = other.resample;
        image_placeholder = std::move(other.image_placeholder);
        no_think_suffix = std::move(other.no_think_suffix);
        suffix_turns_thinking_off = other.suffix_turns_thinking_off;
        images_in_a_row = other.images_in_a_row;
        frames = std::move(other.frames);
        fds = std::move(other.fds);
        root_fd = other.root_fd;
        other.fds.clear();
        other.root_fd = -1;
    }
    return *this;
}

void Bundle::close() {
    for (auto & kv : fds) ::close(kv.second);
    fds.clear();
    if (root_fd >= 0) ::close(root_fd);
    root_fd = -1;
}

std::string Bundle::fd_path(const std::string & rel) const {
    auto it = fds.find(rel);
    if (it == fds.end()) throw Error(EK_ERR_INTERNAL, rel + ": not an opened artifact");
    return "/proc/self/fd/" + std::to_string(it->second);
}

Bundle open_manifest(const std::string & dir, bool verify) {
    Bundle b;
    b.dir = dir;
    b.root_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b.root_fd < 0)
        throw Error(EK_ERR_IO, dir + ": cannot open the bundle directory (" + std::strerror(errno) + ")");
    Json m = read_manifest(b);
    if (m.type != Json::Object) throw Error(EK_ERR_MANIFEST, dir + "/edgekit.json: not a JSON object");
    std::string schema = m.has("schema") && m.at("schema").type == Json::String ? m.at("schema").text : "";
    if (schema != EK_BUNDLE_SCHEMA)
        throw Error(EK_ERR_MANIFEST, dir + "/edgekit.json: unknown schema '" + schema.substr(0, 80) + "'; this host reads " EK_BUNDLE_SCHEMA +
                    " (rebuild the bundle with a matching edgekit, or update the host)");
    check_seal(m);
    const Json & artifacts = need(m, "artifacts", "the manifest");
    const Json & parts = need(m, "parts", "the manifest");
    if (parts.has("vision") && parts.at("vision").has("images"))  // the same ranges as edgekit's verify
        need_int(parts.at("vision").at("images"), "parts.vision.images", 1, 16);
    b.decoder_rel = part_path(parts, artifacts, "decoder", "gguf");
    b.mmproj_rel = part_path(parts, artifacts, "mmproj", "mmproj-gguf");
    const Json & pre = need(m, "preprocessing", "the manifest");
    const Json & res = need(pre, "resolution", "preprocessing");
    if (res.type != Json::Array || res.items.size() != 2)
        throw Error(EK_ERR_MANIFEST, "edgekit.json: preprocessing.resolution must be [width, height]");
    b.width = int(need_int(res.items[0], "preprocessing.resolution[0]", 1, kMaxSide));
    b.height = int(need_int(res.items[1], "preprocessing.resolution[1]", 1, kMaxSide));
    int64_t max_position = need_int(need(need(need(m, "model", "the manifest"), "text", "model"), "max_position", "model.text"),
                                    "model.text.max_position", 1, int64_t(1) << 24);
    b.max_position = int(max_position);
    b.context = int(need_int(need(m, "context", "the manifest"), "context", 1, max_position));
    b.resample = pre.has("resample") ? int(need_int(pre.at("resample"), "preprocessing.resample", 0, 5)) : 3;
    if (!m.has("prompt") || m.at("prompt").type != Json::Object)
        throw Error(EK_ERR_UNSUPPORTED, "edgekit.json has no 'prompt' frames (the template does not put the question in "
                    "verbatim, or an older edgekit built it); rebuild the bundle");
    const Json & prompt = m.at("prompt");
    b.image_placeholder = need_string(prompt, "image_placeholder", "prompt");
    b.no_think_suffix = need_string(prompt, "no_think_suffix", "prompt");
    if (b.image_placeholder.empty() || b.no_think_suffix.find_first_not_of(' ') == std::string::npos)
        throw Error(EK_ERR_MANIFEST, "edgekit.json: prompt.image_placeholder and prompt.no_think_suffix must not be empty");
    const Json & switches = need(prompt, "suffix_turns_thinking_off", "prompt");
    if (switches.type != Json::Bool) throw Error(EK_ERR_MANIFEST, "edgekit.json: prompt.suffix_turns_thinking_off must be true or false");
    b.suffix_turns_thinking_off = switches.boolean;
    if (prompt.has("images_in_a_row")) {  // absent in bundles built before several cameras were asked about
        const Json & row = prompt.at("images_in_a_row");
        if (row.type != Json::Bool) throw Error(EK_ERR_MANIFEST, "edgekit.json: prompt.images_in_a_row must be true or false");
        b.images_in_a_row = row.boolean;
    }
    const Json & frames = need(prompt, "frames", "prompt");
    for (const char * mode : {"think", "no_think"}) {
        const Json & by_images = need(frames, mode, "prompt.frames");
        for (const char * images : {"0", "1"}) {
            std::string where = std::string("prompt.frames.") + mode + "." + images;
            const Json & f = need(by_images, images, std::string("prompt.frames.") + mode);
            b.frames[std::string(mode) + "/" + images] = {need_string(f, "before", where), need_string(f, "after", where)};
        }
    }
    open_artifacts(b, artifacts, verify);  // last: every number and path above checked before any artifact is opened
    return b;
}

}  // namespace ek
