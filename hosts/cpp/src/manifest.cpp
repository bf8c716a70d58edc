#include "manifest.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "errors.h"
#include "json.h"
#include "sha256.h"

namespace ek {
namespace {

const char * kManifest = "edgekit.json";
const char * kSealedOut[] = {"seal", "signature"};  // fields outside the seal (edgekit/bundle/manifest.py)

std::string read_file(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(EK_ERR_IO, path + ": cannot be read");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

bool sealed(const std::string & key) {
    for (const char * k : kSealedOut) if (key == k) return false;
    return true;
}

// sha256 of each field's canonical JSON, to depth 2 ("parts.decoder", "context", ...), as edgekit's field_digests.
Json field_digests(const Json & manifest) {
    Json out;
    out.type = Json::Object;
    auto digest = [](const Json & v) { Json d; d.type = Json::String; d.text = sha256_hex(canonical_json(v)); return d; };
    for (const auto & kv : manifest.members) {
        if (!sealed(kv.first)) continue;
        if (kv.second.type == Json::Object && !kv.second.members.empty()) {
            for (const auto & sub : kv.second.members) out.members[kv.first + "." + sub.first] = digest(sub.second);
        } else {
            out.members[kv.first] = digest(kv.second);
        }
    }
    return out;
}

void check_seal(const Json & m) {
    if (!m.has("seal") || !m.at("seal").has("fields") || m.at("seal").at("fields").type != Json::Object)
        throw Error(EK_ERR_MANIFEST, "edgekit.json has no seal: it was edited, or written by an older edgekit; rebuild the bundle");
    const Json & fields = m.at("seal").at("fields");
    Json now = field_digests(m);
    for (const auto & kv : now.members) {
        if (!fields.has(kv.first))
            throw Error(EK_ERR_MANIFEST, "edgekit.json: field '" + kv.first + "' was added after the build");
        if (fields.at(kv.first).type != Json::String || fields.at(kv.first).text != kv.second.text)
            throw Error(EK_ERR_MANIFEST, "edgekit.json: field '" + kv.first + "' was edited after the build (it differs from the seal)");
    }
    for (const auto & kv : fields.members) {
        if (!now.has(kv.first))
            throw Error(EK_ERR_MANIFEST, "edgekit.json: field '" + kv.first + "' was removed after the build");
    }
    const Json & seal = m.at("seal");
    if (!seal.has("sha256") || seal.at("sha256").type != Json::String || seal.at("sha256").text != sha256_hex(canonical_json(fields)))
        throw Error(EK_ERR_MANIFEST, "edgekit.json: the seal's sha256 does not match its field digests (the seal was edited)");
}

// Relative, normalised, inside the bundle: no absolute path, no '..', no empty or '.' component.
void check_relpath(const std::string & rel, const std::string & what) {
    bool bad = rel.empty() || rel[0] == '/' || rel.find('\\') != std::string::npos || rel.find('\0') != std::string::npos;
    std::stringstream parts(rel);
    std::string part;
    while (!bad && std::getline(parts, part, '/')) bad = part.empty() || part == "." || part == "..";
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

int64_t need_int(const Json & v, const std::string & where) {
    try {
        return v.integer();
    } catch (const std::exception &) {
        throw Error(EK_ERR_MANIFEST, "edgekit.json: " + where + " must be a whole number");
    }
}

void verify_artifacts(const std::string & dir, const Json & artifacts) {
    if (artifacts.type != Json::Object) throw Error(EK_ERR_MANIFEST, "edgekit.json: 'artifacts' must be an object");
    for (const auto & kv : artifacts.members) {
        const std::string & rel = kv.first;
        check_relpath(rel, "artifacts");
        std::string path = dir + "/" + rel;
        struct stat st;
        if (lstat(path.c_str(), &st) != 0) throw Error(EK_ERR_INTEGRITY, rel + ": listed in the manifest but missing");
        if (!S_ISREG(st.st_mode)) throw Error(EK_ERR_INTEGRITY, rel + ": not a regular file (a sealed bundle holds no links)");
        if (int64_t(st.st_size) != need_int(need(kv.second, "size", "artifacts." + rel), "artifacts." + rel + ".size"))
            throw Error(EK_ERR_INTEGRITY, rel + ": size " + std::to_string(st.st_size) + " differs from the manifest (modified or truncated)");
        if (sha256_file(path) != need_string(kv.second, "sha256", "artifacts." + rel))
            throw Error(EK_ERR_INTEGRITY, rel + ": sha256 differs from the manifest (modified or corrupt); refusing to load it");
    }
}

std::string part_path(const std::string & dir, const Json & parts, const Json & artifacts, const std::string & name,
                      const std::string & format) {
    if (!parts.has(name)) throw Error(EK_ERR_UNSUPPORTED, "bundle has no " + name + " part; build it with --backend gguf");
    const Json & part = parts.at(name);
    std::string fmt = part.has("format") && part.at("format").type == Json::String ? part.at("format").text : "";
    if (fmt != format)
        throw Error(EK_ERR_UNSUPPORTED, "parts." + name + " is '" + fmt + "', not '" + format +
                    "': this host runs GGUF bundles (build with --backend gguf)");
    std::string rel = need_string(part, "path", "parts." + name);
    check_relpath(rel, "parts." + name);
    if (!artifacts.has(rel)) throw Error(EK_ERR_MANIFEST, "parts." + name + ": '" + rel + "' is not a hashed artifact");
    return dir + "/" + rel;
}

}  // namespace

Bundle open_manifest(const std::string & dir, bool verify) {
    Bundle b;
    b.dir = dir;
    std::string path = dir + "/" + kManifest;
    Json m;
    try {
        m = parse_json(read_file(path));
    } catch (const Error &) {
        throw;
    } catch (const std::exception & e) {
        throw Error(EK_ERR_MANIFEST, path + ": not valid JSON (" + e.what() + ")");
    }
    if (m.type != Json::Object) throw Error(EK_ERR_MANIFEST, path + ": not a JSON object");
    std::string schema = m.has("schema") && m.at("schema").type == Json::String ? m.at("schema").text : "";
    if (schema != EK_BUNDLE_SCHEMA)
        throw Error(EK_ERR_MANIFEST, path + ": unknown schema '" + schema + "'; this host reads " EK_BUNDLE_SCHEMA +
                    " (rebuild the bundle with a matching edgekit, or update the host)");
    check_seal(m);
    const Json & artifacts = need(m, "artifacts", "the manifest");
    if (verify) verify_artifacts(dir, artifacts);
    const Json & parts = need(m, "parts", "the manifest");
    b.decoder_path = part_path(dir, parts, artifacts, "decoder", "gguf");
    b.mmproj_path = part_path(dir, parts, artifacts, "mmproj", "mmproj-gguf");
    const Json & pre = need(m, "preprocessing", "the manifest");
    const Json & res = need(pre, "resolution", "preprocessing");
    b.width = int(need_int(res.type == Json::Array && res.items.size() == 2 ? res.items[0] : Json(), "preprocessing.resolution[0]"));
    b.height = int(need_int(res.type == Json::Array && res.items.size() == 2 ? res.items[1] : Json(), "preprocessing.resolution[1]"));
    if (b.width < 1 || b.height < 1) throw Error(EK_ERR_MANIFEST, "edgekit.json: preprocessing.resolution must be positive");
    b.context = int(need_int(need(m, "context", "the manifest"), "context"));
    b.resample = pre.has("resample") ? int(need_int(pre.at("resample"), "preprocessing.resample")) : 3;
    if (!m.has("prompt"))
        throw Error(EK_ERR_UNSUPPORTED, "edgekit.json has no 'prompt' frames (built by an older edgekit); rebuild the bundle");
    const Json & prompt = m.at("prompt");
    b.image_placeholder = need_string(prompt, "image_placeholder", "prompt");
    b.no_think_suffix = need_string(prompt, "no_think_suffix", "prompt");
    const Json & switches = need(prompt, "suffix_turns_thinking_off", "prompt");
    if (switches.type != Json::Bool) throw Error(EK_ERR_MANIFEST, "edgekit.json: prompt.suffix_turns_thinking_off must be true or false");
    b.suffix_turns_thinking_off = switches.boolean;
    const Json & frames = need(prompt, "frames", "prompt");
    for (const char * mode : {"think", "no_think"}) {
        const Json & by_images = need(frames, mode, "prompt.frames");
        for (const char * images : {"0", "1"}) {
            std::string where = std::string("prompt.frames.") + mode + "." + images;
            const Json & f = need(by_images, images, std::string("prompt.frames.") + mode);
            b.frames[std::string(mode) + "/" + images] = {need_string(f, "before", where), need_string(f, "after", where)};
        }
    }
    return b;
}

}  // namespace ek
