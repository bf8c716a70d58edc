// A small JSON reader for edgekit.json: parses to a tree that keeps every number's text as written, so the seal
// (sha256 over Python's canonical json.dumps) can be recomputed byte for byte: Python writes a float's shortest
// repr both in the file and in the canonical form, and re-printing a parsed double may not give the same digits.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ek {

struct Json {
    enum Type { Null, Bool, Number, String, Array, Object } type = Null;
    bool boolean = false;
    std::string text;                    // a String's value (UTF-8), or a Number's text as written
    std::vector<Json> items;             // Array
    std::map<std::string, Json> members; // Object, sorted by key bytes (= code point order, as Python sorts)

    bool has(const std::string & key) const { return type == Object && members.count(key) > 0; }
    const Json & at(const std::string & key) const;  // throws std::runtime_error naming the key
    const Json & at(size_t index) const;
    std::string str() const;    // a String's value
    int64_t integer() const;    // a Number without fraction or exponent
};

// Throws std::runtime_error("... at byte N") on malformed input.
Json parse_json(const std::string & text);

// Python's json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).
std::string canonical_json(const Json & value);

}  // namespace ek
