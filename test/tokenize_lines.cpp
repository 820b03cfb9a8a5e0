// build/tokenize_lines MODEL.bin [--no-special | --chat]
// Reads lines of hex-encoded UTF-8 bytes on stdin and prints the ids of each line's text, space-separated,
// one output line per input line ("ERROR <message>" for input the tokenizer refuses). With --no-special,
// special tokens written in the text are not parsed (encode(text, false)). Used by test_tokenizer_hf.py
// to compare with the Hugging Face tokenizer on many random strings in one process.
//
// --chat: each line is "GTD ROLE:CONTENT ROLE:CONTENT ..." with ROLE and CONTENT hex-encoded and G, T, D
// the digits 0/1 of ChatOptions add_generation_prompt, enable_thinking, use_default_system; prints
// "HEX(chat_text) | ids of chat_tokens", for comparison with the Jinja chat templates.
//
// --chat-json: each line is a JSON object {"messages": [...], "tools": [...], "add_generation_prompt": bool,
// "enable_thinking": bool} in OpenAI's shapes (assistant tool_calls with arguments as an object or a JSON string,
// reasoning_content, role "tool"); prints the same as --chat.
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include "../qwen.hpp"

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Bytes of a hex string; false if it is not one.
static bool unhex(const std::string& hex, std::string& out) {
    out.clear();
    if (hex.size() % 2) return false;
    for (size_t i = 0; i < hex.size(); i += 2) {
        int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0) return false;
        out += char(hi * 16 + lo);
    }
    return true;
}

static std::string ids_line(const std::vector<int>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size(); i++) s += (i ? " " : "") + std::to_string(ids[i]);
    return s;
}

// HEX(chat_text) | ids of chat_tokens
static std::string text_line(const qwen::Tokenizer& tok, const qwen::ChatInfo& chat,
                             const std::vector<qwen::Message>& msgs, const qwen::ChatOptions& o) {
    std::string text = qwen::chat_text(chat, msgs, o), hex;
    for (unsigned char c : text) {
        hex += "0123456789abcdef"[c >> 4];
        hex += "0123456789abcdef"[c & 15];
    }
    return hex + " | " + ids_line(qwen::chat_tokens(tok, chat, msgs, o));
}

// One --chat line: options, then role:content pairs.
static std::string chat_line(const qwen::Tokenizer& tok, const qwen::ChatInfo& chat, const std::string& line) {
    std::istringstream in(line);
    std::string opts, field;
    in >> opts;
    if (opts.size() != 3) return "ERROR bad options";
    qwen::ChatOptions o;
    o.add_generation_prompt = opts[0] == '1';
    o.enable_thinking = opts[1] == '1';
    o.use_default_system = opts[2] == '1';
    std::vector<qwen::Message> msgs;
    while (in >> field) {
        size_t colon = field.find(':');
        qwen::Message m;
        if (colon == std::string::npos || !unhex(field.substr(0, colon), m.role) ||
            !unhex(field.substr(colon + 1), m.content))
            return "ERROR bad message";
        msgs.push_back(m);
    }
    return text_line(tok, chat, msgs, o);
}

// One --chat-json line.
static std::string chat_json_line(const qwen::Tokenizer& tok, const qwen::ChatInfo& chat, const std::string& line) {
    qwen::JsonValue req = qwen::parse_json(line);
    qwen::ChatOptions o;
    if (const qwen::JsonValue* g = req.get("add_generation_prompt")) o.add_generation_prompt = g->boolean;
    if (const qwen::JsonValue* t = req.get("enable_thinking")) o.enable_thinking = t->boolean;
    if (const qwen::JsonValue* tools = req.get("tools"))
        for (const qwen::JsonValue& t : tools->items) o.tools.push_back(qwen::json_dump(t));
    std::vector<qwen::Message> msgs;
    for (const qwen::JsonValue& m : req.get("messages")->items) {
        qwen::Message msg;
        msg.role = m.get("role")->text;
        const qwen::JsonValue* content = m.get("content");
        if (content && content->type == qwen::JsonValue::STRING) msg.content = content->text;
        if (const qwen::JsonValue* r = m.get("reasoning_content")) msg.reasoning = r->text;
        if (const qwen::JsonValue* calls = m.get("tool_calls"))
            for (const qwen::JsonValue& c : calls->items) {
                const qwen::JsonValue* f = c.get("function");
                const qwen::JsonValue* args = f->get("arguments");
                msg.tool_calls.push_back({"", f->get("name")->text,
                                          args->type == qwen::JsonValue::STRING ? args->text : qwen::json_dump(*args)});
            }
        msgs.push_back(msg);
    }
    return text_line(tok, chat, msgs, o);
}

int main(int argc, char** argv) {
    std::string mode = argc == 3 ? argv[2] : "";
    if (argc < 2 || argc > 3 || (argc == 3 && mode != "--no-special" && mode != "--chat" && mode != "--chat-json")) {
        fprintf(stderr, "usage: %s MODEL.bin [--no-special | --chat | --chat-json] < lines\n", argv[0]);
        return 2;
    }
    try {
        qwen::Model model = qwen::load_tokenizer(argv[1]);
        qwen::Tokenizer tok(model.vocab);
        std::string line, text;
        while (std::getline(std::cin, line)) {
            try {
                if (mode == "--chat") {
                    printf("%s\n", chat_line(tok, model.chat, line).c_str());
                } else if (mode == "--chat-json") {
                    printf("%s\n", chat_json_line(tok, model.chat, line).c_str());
                } else if (!unhex(line, text)) {
                    printf("ERROR input line is not hex\n");
                } else {
                    printf("%s\n", ids_line(tok.encode(text, mode != "--no-special")).c_str());
                }
            } catch (const qwen::Error& e) {
                printf("ERROR %s\n", e.what());
            }
        }
    } catch (const qwen::Error& e) {
        fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
