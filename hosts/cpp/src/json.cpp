#include "json.h"

#include <cstdio>
#include <stdexcept>

namespace ek {
namespace {

class Parser {
public:
    explicit Parser(const std::string & s) : s_(s) {}

    Json document() {
        Json v = value();
        space();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string & what) const {
        throw std::runtime_error(what + " at byte " + std::to_string(i_));
    }
    void space() { while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_; }
    bool eat(char c) { space(); if (i_ < s_.size() && s_[i_] == c) { ++i_; return true; } return false; }
    void expect(char c) { if (!eat(c)) fail(std::string("expected '") + c + "'"); }
    bool word(const char * w) {
        size_t n = std::char_traits<char>::length(w);
        if (s_.compare(i_, n, w) == 0) { i_ += n; return true; }
        return false;
    }

    Json value() {
        space();
        if (i_ >= s_.size()) fail("unexpected end");
        Json v;
        char c = s_[i_];
        if (c == '{') {
            ++i_;
            v.type = Json::Object;
            if (eat('}')) return v;
            do {
                space();
                std::string key = string_body();
                expect(':');
                v.members[key] = value();
            } while (eat(','));
            expect('}');
        } else if (c == '[') {
            ++i_;
            v.type = Json::Array;
            if (eat(']')) return v;
            do v.items.push_back(value()); while (eat(','));
            expect(']');
        } else if (c == '"') {
            v.type = Json::String;
            v.text = string_body();
        } else if (word("true")) { v.type = Json::Bool; v.boolean = true; }
        else if (word("false")) { v.type = Json::Bool; }
        else if (word("null")) { v.type = Json::Null; }
        else {
            size_t start = i_;
            if (s_[i_] == '-') ++i_;
            while (i_ < s_.size() && std::string("0123456789.eE+-").find(s_[i_]) != std::string::npos) ++i_;
            if (i_ == start || (i_ == start + 1 && s_[start] == '-')) fail("unexpected character");
            v.type = Json::Number;
            v.text = s_.substr(start, i_ - start);
        }
        return v;
    }

    unsigned hex4() {
        if (i_ + 4 > s_.size()) fail("short \\u escape");
        unsigned u = 0;
        for (int k = 0; k < 4; ++k) {
            char h = s_[i_++];
            u = u * 16 + (h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                          : h >= 'A' && h <= 'F' ? h - 'A' + 10 : (fail("bad \\u escape"), 0));
        }
        return u;
    }

    static void utf8(std::string & out, unsigned cp) {
        if (cp < 0x80) out += char(cp);
        else if (cp < 0x800) { out += char(0xC0 | cp >> 6); out += char(0x80 | (cp & 63)); }
        else if (cp < 0x10000) { out += char(0xE0 | cp >> 12); out += char(0x80 | (cp >> 6 & 63)); out += char(0x80 | (cp & 63)); }
        else { out += char(0xF0 | cp >> 18); out += char(0x80 | (cp >> 12 & 63)); out += char(0x80 | (cp >> 6 & 63)); out += char(0x80 | (cp & 63)); }
    }

    std::string string_body() {
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
        ++i_;
        std::string out;
        while (true) {
            if (i_ >= s_.size()) fail("unterminated string");
            char c = s_[i_++];
            if (c == '"') return out;
            if (c != '\\') { out += c; continue; }
            if (i_ >= s_.size()) fail("unterminated escape");
            char e = s_[i_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(i_, 2, "\\u") == 0) {  // a surrogate pair
                        i_ += 2;
                        unsigned lo = hex4();
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    utf8(out, cp);
                    break;
                }
                default: fail("bad escape");
            }
        }
    }

    const std::string & s_;
    size_t i_ = 0;
};

void write_string(std::string & out, const std::string & s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += char(c);  // ensure_ascii=False: UTF-8 as is
                }
        }
    }
    out += '"';
}

void write(std::string & out, const Json & v) {
    switch (v.type) {
        case Json::Null: out += "null"; break;
        case Json::Bool: out += v.boolean ? "true" : "false"; break;
        case Json::Number: out += v.text; break;
        case Json::String: write_string(out, v.text); break;
        case Json::Array:
            out += '[';
            for (size_t k = 0; k < v.items.size(); ++k) { if (k) out += ','; write(out, v.items[k]); }
            out += ']';
            break;
        case Json::Object: {
            out += '{';
            bool first = true;
            for (const auto & kv : v.members) {
                if (!first) out += ',';
                first = false;
                write_string(out, kv.first);
                out += ':';
                write(out, kv.second);
            }
            out += '}';
        }
    }
}

}  // namespace

const Json & Json::at(const std::string & key) const {
    auto it = type == Object ? members.find(key) : members.end();
    if (it == members.end()) throw std::runtime_error("no '" + key + "'");
    return it->second;
}

const Json & Json::at(size_t index) const {
    if (type != Array || index >= items.size()) throw std::runtime_error("no item " + std::to_string(index));
    return items[index];
}

std::string Json::str() const {
    if (type != String) throw std::runtime_error("expected a string");
    return text;
}

int64_t Json::integer() const {
    if (type != Number || text.find_first_of(".eE") != std::string::npos) throw std::runtime_error("expected a whole number");
    return std::stoll(text);
}

Json parse_json(const std::string & text) { return Parser(text).document(); }

std::string canonical_json(const Json & value) {
    std::string out;
    write(out, value);
    return out;
}

}  // namespace ek
