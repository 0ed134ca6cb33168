// Tests for the byte encodings (mail/codec.hh): the RFC 4648 base64 test
// vectors, strict against lenient decoding, the streaming decoder over any
// split; quoted-printable on the RFC 2045 examples, line lengths and
// round trips; xtext strict and lenient.
#include "mail/codec.hh"

#include <catch2/catch.hpp>

#include <random>

using namespace rw::mail;

namespace {

// Random bytes biased towards what the encoders treat specially.
std::string random_bytes(std::mt19937& rng, size_t n) {
    static constexpr char k_special[] = {' ', '\t', '\r', '\n', '=', '+', '.', 'a', 'Z', '\0', '\x7f', '\xff'};
    std::string s;
    for (size_t i = 0; i < n; ++i)
        s += rng() % 2 ? k_special[rng() % sizeof k_special] : char(rng());
    return s;
}

std::string stream_decode(std::string_view text, size_t piece, bool* ok = nullptr) {
    base64_decoder d;
    std::string out;
    for (size_t i = 0; i < text.size(); i += piece)
        d.feed(text.substr(i, piece), out);
    const bool fine = d.finish(out);
    if (ok)
        *ok = fine;
    return out;
}

std::string qp(std::string_view in, bool* clean = nullptr) {
    std::string out;
    const bool c = qp_decode(in, out);
    if (clean)
        *clean = c;
    return out;
}

}  // namespace

TEST_CASE("base64: the RFC 4648 section 10 test vectors", "[codec][base64]") {
    const std::pair<const char*, const char*> vectors[] = {
        {"", ""},           {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (auto [plain, encoded] : vectors) {
        INFO(plain);
        CHECK(base64_encode(plain) == encoded);
        CHECK(base64_decode(encoded) == std::optional<std::string>(plain));
        CHECK(base64_decode(encoded, base64_mode::lenient) == std::optional<std::string>(plain));
        CHECK(stream_decode(encoded, 1) == plain);
    }
    CHECK(base64_encode(std::string("\0\xff\xfe", 3)) == "AP/+");
    CHECK(base64_decode("AP/+") == std::optional<std::string>(std::string("\0\xff\xfe", 3)));
}

TEST_CASE("base64: strict decoding refuses all but the one spelling", "[codec][base64]") {
    for (const char* bad : {"Zg=", "Zg", "Z", "Z===", "====", "Zm9v\r\n", "Zm 9v", "Zm9v\tYg==", "Zg==Zg==",
                            "Zm9v!", "Zm-_", "Z=g=", "Zm=v", "=Zm9", "Zh==", "Zm9=", "Zm9vYh=="}) {
        INFO(bad);
        CHECK_FALSE(base64_decode(bad));
    }
    // SASL's empty response is "=" in the command, but the base64 of
    // nothing is the empty string.
    CHECK(base64_decode("") == std::optional<std::string>(""));
}

TEST_CASE("base64: lenient decoding skips whitespace only", "[codec][base64]") {
    CHECK(base64_decode("Zm9v\r\nYmFy", base64_mode::lenient) == std::optional<std::string>("foobar"));
    CHECK(base64_decode(" Zm 9v\tYg = =\r\n", base64_mode::lenient) == std::optional<std::string>("foob"));
    CHECK(base64_decode("\n", base64_mode::lenient) == std::optional<std::string>(""));
    // A DKIM signature's b= tag as it comes, folded.
    CHECK(base64_decode("dGhl\r\n\t IHNp Z25h\r\n dHVyZQ==", base64_mode::lenient) ==
          std::optional<std::string>("the signature"));
    // Nonzero unused bits are tolerated here.
    CHECK(base64_decode("Zh==", base64_mode::lenient) == std::optional<std::string>("f"));
    const std::string nul("Zm\09v", 5);
    for (std::string_view bad : {std::string_view("Zm9v!"), std::string_view("Zm9v.YmFy"), std::string_view("Zg="),
                                 std::string_view("Zg"), std::string_view("Zg==Zg=="), std::string_view("Zg==="),
                                 std::string_view("Z=g="), std::string_view("="), std::string_view("Zm9vY"),
                                 std::string_view(nul)}) {
        INFO(bad);
        CHECK_FALSE(base64_decode(bad, base64_mode::lenient));
    }
}

TEST_CASE("base64: the streaming decoder gives the same bytes for any split", "[codec][base64]") {
    std::mt19937 rng(7);
    const std::string plain = random_bytes(rng, 1000);
    std::string body;
    const std::string encoded = base64_encode(plain);
    for (size_t i = 0; i < encoded.size(); i += 76)
        body += encoded.substr(i, 76) + "\r\n";
    for (size_t piece = 1; piece < 80; piece += piece < 10 ? 1 : 7) {
        INFO(piece);
        bool ok = false;
        CHECK(stream_decode(body, piece, &ok) == plain);
        CHECK(ok);
    }
}

TEST_CASE("base64: the streaming decoder repairs what it can and says so", "[codec][base64]") {
    bool ok = true;
    CHECK(stream_decode("Zm9v!YmFy", 3, &ok) == "foobar");
    CHECK_FALSE(ok);
    CHECK(stream_decode("Zg==Zm8=", 1, &ok) == "ffo");  // two encoded parts back to back
    CHECK_FALSE(ok);
    CHECK(stream_decode("Zm9vYmE", 2, &ok) == "fooba");  // padding lost
    CHECK_FALSE(ok);
    CHECK(stream_decode("Zm9vY", 2, &ok) == "foo");  // a lone sextet holds no byte
    CHECK_FALSE(ok);
    CHECK(stream_decode("Zg=", 2, &ok) == "f");
    CHECK_FALSE(ok);
    CHECK(stream_decode("Zm9v\r\n", 2, &ok) == "foo");
    CHECK(ok);

    // bad() sticks, even across finish().
    base64_decoder d;
    std::string out;
    d.feed("Zm9v*", out);
    CHECK(d.bad());
    CHECK_FALSE(d.finish(out));
    d.feed("YmFy", out);
    CHECK_FALSE(d.finish(out));
    CHECK(out == "foobar");
}

TEST_CASE("base64: decode(encode(x)) == x", "[codec][base64]") {
    std::mt19937 rng(11);
    for (int n = 0; n < 300; ++n) {
        const std::string x = random_bytes(rng, rng() % 40);
        const std::string e = base64_encode(x);
        CHECK(e.size() % 4 == 0);
        CHECK(base64_decode(e) == std::optional<std::string>(x));
        CHECK(base64_decode(e, base64_mode::lenient) == std::optional<std::string>(x));
        CHECK(stream_decode(e, 1 + rng() % 5) == x);
    }
}

TEST_CASE("quoted-printable: the RFC 2045 section 6.7 examples", "[codec][qp]") {
    bool clean = false;
    // Rule 5: soft line breaks.
    CHECK(qp("Now's the time =\r\nfor all folk to come=\r\n to the aid of their country.", &clean) ==
          "Now's the time for all folk to come to the aid of their country.");
    CHECK(clean);
    // Rule 1: "=HH", with lower-case hex accepted as the RFC suggests.
    CHECK(qp("=3D=3d=C3=A9", &clean) == "==\xc3\xa9");
    CHECK(clean);
    // Rule 3: whitespace a transport may have added at line ends goes.
    CHECK(qp("trailing  \t\r\nnext \r\nlast  ") == "trailing\r\nnext\r\nlast");
    // Whitespace after a soft break's '=' as well.
    CHECK(qp("soft= \t\r\nbreak") == "softbreak");
    // Encoded whitespace stays.
    CHECK(qp("kept=20\r\n") == "kept \r\n");
}

TEST_CASE("quoted-printable: bare LF, bad escapes and the end of input", "[codec][qp]") {
    bool clean = false;
    CHECK(qp("a=\nb\nc", &clean) == "ab\nc");
    CHECK(clean);
    CHECK(qp("a=G1b", &clean) == "a=G1b");
    CHECK_FALSE(clean);
    CHECK(qp("x=4\r\ny", &clean) == "x=4\r\ny");
    CHECK_FALSE(clean);
    CHECK(qp("100% = true", &clean) == "100% = true");
    CHECK_FALSE(clean);
    CHECK(qp("=\r", &clean) == "=\r");  // a CR without LF is no line break
    CHECK_FALSE(clean);
    CHECK(qp("last=", &clean) == "last");  // a soft break at the very end
    CHECK(clean);
    CHECK(qp("") == "");
    CHECK(qp("\r\n\r\n") == "\r\n\r\n");
    // qp_decode appends.
    std::string out = "x";
    CHECK(qp_decode("=41", out));
    CHECK(out == "xA");
}

TEST_CASE("quoted-printable: what the encoder escapes", "[codec][qp]") {
    CHECK(qp_encode("a=b") == "a=3Db");
    CHECK(qp_encode("caf\xc3\xa9") == "caf=C3=A9");
    CHECK(qp_encode("trailing \r\nx") == "trailing=20\r\nx");
    CHECK(qp_encode("tab\t") == "tab=09");
    CHECK(qp_encode("in between") == "in between");
    CHECK(qp_encode("lf\nonly") == "lf=0Aonly");
    CHECK(qp_encode("cr\ronly\r") == "cr=0Donly=0D");
    CHECK(qp_encode("line\r\n\r\n") == "line\r\n\r\n");
    CHECK(qp_encode(std::string("\0", 1)) == "=00");
    CHECK(qp_encode("") == "");
}

TEST_CASE("quoted-printable: lines stay within 76 characters", "[codec][qp]") {
    auto check_lines = [](const std::string& e) {
        size_t start = 0;
        while (start <= e.size()) {
            size_t end = e.find("\r\n", start);
            const std::string line = e.substr(start, end == std::string::npos ? std::string::npos : end - start);
            INFO(line);
            CHECK(line.size() <= 76);
            for (char c : line)
                CHECK(((c >= 33 && c <= 126) || c == ' ' || c == '\t'));
            if (!line.empty())
                CHECK((line.back() != ' ' && line.back() != '\t'));
            if (end == std::string::npos)
                break;
            start = end + 2;
        }
    };
    const std::string a(200, 'a');
    const std::string ea = qp_encode(a);
    check_lines(ea);
    CHECK(ea.starts_with(std::string(75, 'a') + "=\r\n"));
    CHECK(qp(ea) == a);
    // Exactly 76 fits on one line; 77 does not.
    CHECK(qp_encode(std::string(76, 'b')) == std::string(76, 'b'));
    CHECK(qp_encode(std::string(77, 'b')) == std::string(75, 'b') + "=\r\nbb");
    // Escapes are never cut.
    const std::string eq(100, '=');
    const std::string eeq = qp_encode(eq);
    check_lines(eeq);
    CHECK(eeq.starts_with("=3D=3D"));
    CHECK(eeq.find("=\r\n") == 75);
    CHECK(qp(eeq) == eq);
    // A space before a soft break is not at the end of a line.
    const std::string sp = std::string(74, 'c') + "  d";
    const std::string esp = qp_encode(sp);
    check_lines(esp);
    CHECK(qp(esp) == sp);
}

TEST_CASE("quoted-printable: decode(encode(x)) == x", "[codec][qp]") {
    std::mt19937 rng(3);
    for (int n = 0; n < 500; ++n) {
        const std::string x = random_bytes(rng, rng() % 300);
        const std::string e = qp_encode(x);
        bool clean = false;
        INFO(e);
        CHECK(qp(e, &clean) == x);
        CHECK(clean);
    }
}

TEST_CASE("xtext: RFC 3461 encoding, strict and lenient decoding", "[codec][xtext]") {
    CHECK(xtext_encode("a+b=c d\x01") == "a+2Bb+3Dc+20d+01");
    CHECK(xtext_encode("\xc3\xa9~!") == "+C3+A9~!");
    CHECK(xtext_decode("a+2Bb+3Dc+20d+01") == std::optional<std::string>("a+b=c d\x01"));
    CHECK(xtext_decode("") == std::optional<std::string>(""));
    CHECK(xtext_decode("+41") == std::optional<std::string>("A"));  // needless but valid
    for (const char* bad : {"a+2b", "a+2", "+", "a+G0", "a=b", "a b", "\x80", "a\x7f", "\t"}) {
        INFO(bad);
        CHECK_FALSE(xtext_decode(bad));
    }
    CHECK(xtext_decode_lenient("a+2Bb+3Dc+20d+01") == "a+b=c d\x01");
    CHECK(xtext_decode_lenient("a+2b") == "a+2b");
    CHECK(xtext_decode_lenient("+") == "+");
    CHECK(xtext_decode_lenient("a+4") == "a+4");
    CHECK(xtext_decode_lenient("++41") == "+A");
    CHECK(xtext_decode_lenient("a=b c") == "a=b c");
    std::mt19937 rng(5);
    for (int n = 0; n < 300; ++n) {
        const std::string x = random_bytes(rng, rng() % 30);
        CHECK(xtext_decode(xtext_encode(x)) == std::optional<std::string>(x));
        CHECK(xtext_decode_lenient(xtext_encode(x)) == x);
    }
}
