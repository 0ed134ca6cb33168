// DKIM: canonicalization against RFC 6376 3.4.5's example, the empty-body
// digests every implementation agrees on, split feeding, tag lists, and
// signature and key-record refusals with their reasons.
#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "mail/codec.hh"
#include "policy/dkim.hh"
#include "policy/dkim_sign.hh"

using namespace rw;
using namespace rw::policy;
using namespace rw::policy::dkim;

namespace {

std::string sha256(std::string_view s) {
    unsigned char d[32];
    unsigned n = 0;
    EVP_Digest(s.data(), s.size(), d, &n, EVP_sha256(), nullptr);
    return std::string(reinterpret_cast<char*>(d), n);
}

std::string hash_body(canon c, std::string_view body, size_t step, std::optional<uint64_t> l = std::nullopt) {
    body_hasher h(c, false, l);
    for (size_t i = 0; i < body.size(); i += step)
        h.feed(body.substr(i, step));
    return h.finish();
}

}  // namespace

TEST_CASE("dkim: RFC 6376 3.4.5 canonicalization example", "[dkim]") {
    REQUIRE(canon_header("A: X\r\n", 1, canon::relaxed) == "a:X\r\n");
    REQUIRE(canon_header("B : Y\t\r\n\tZ  \r\n", 2, canon::relaxed) == "b:Y Z\r\n");
    REQUIRE(canon_header("B : Y\t\r\n\tZ  \r\n", 2, canon::simple) == "B : Y\t\r\n\tZ  \r\n");
    const std::string body = " C \r\nD \t E\r\n\r\n\r\n";
    for (size_t step : {size_t(1), size_t(2), size_t(5), body.size()}) {
        INFO("step " << step);
        REQUIRE(hash_body(canon::relaxed, body, step) == sha256(" C\r\nD E\r\n"));
        REQUIRE(hash_body(canon::simple, body, step) == sha256(" C \r\nD \t E\r\n"));
    }
}

TEST_CASE("dkim: empty bodies, missing final CRLF, lone CR, l=", "[dkim]") {
    // The digests of RFC 6376 3.4.3 and 3.4.4's empty bodies.
    REQUIRE(mail::base64_encode(hash_body(canon::simple, "", 1)) == "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
    REQUIRE(mail::base64_encode(hash_body(canon::relaxed, "", 1)) == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    REQUIRE(hash_body(canon::simple, "\r\n\r\n", 1) == sha256("\r\n"));
    REQUIRE(hash_body(canon::relaxed, " \r\n\t\r\n", 1) == sha256(""));
    REQUIRE(hash_body(canon::simple, "abc", 2) == sha256("abc\r\n"));
    REQUIRE(hash_body(canon::relaxed, "a\rb  ", 1) == sha256("a\rb\r\n"));
    REQUIRE(hash_body(canon::relaxed, "hello world\r\n", 3, 5) == sha256("hello"));
}

TEST_CASE("dkim: tag lists", "[dkim]") {
    auto t = parse_tags(" v=1;\r\n\ta = rsa-sha256 ; b=ab\r\n cd;");
    REQUIRE(t);
    REQUIRE(t->size() == 3);
    REQUIRE((*t)[1].name == "a");
    REQUIRE((*t)[1].value == "rsa-sha256");
    REQUIRE((*t)[2].value == "ab\r\n cd");
    REQUIRE(!parse_tags("v=1; v=2"));   // repeated
    REQUIRE(!parse_tags("v"));          // no '='
    REQUIRE(!parse_tags("1v=1"));       // name starts with a digit
    REQUIRE(parse_tags("")->empty());
}

TEST_CASE("dkim: signatures and key records refused with reasons", "[dkim]") {
    std::string why;
    const std::string ok = "v=1; a=rsa-sha256; d=Example.COM; s=sel; h=From:To; bh=AAAA; b=AAAA";
    auto s = parse_signature(ok, why);
    REQUIRE(s);
    REQUIRE(s->d == "example.com");
    REQUIRE(s->i == "@example.com");
    REQUIRE(s->h.size() == 2);
    REQUIRE(key_query(*s).name == "sel._domainkey.example.com");
    struct bad {
        std::string text, why;
    };
    for (const bad& b : {bad{"v=1; a=rsa-sha256; d=x.test; s=s; h=to; bh=AAAA; b=AAAA", "h= does not include From"},
                         bad{"v=2; a=rsa-sha256; d=x.test; s=s; h=from; bh=AAAA; b=AAAA", "signature version is not 1"},
                         bad{"v=1; a=rsa-md5; d=x.test; s=s; h=from; bh=AAAA; b=AAAA", "unknown signing algorithm rsa-md5"},
                         bad{"v=1; a=rsa-sha256; d=x.test; s=s; h=from; bh=AAAA", "signature has no b= tag"},
                         bad{"v=1; a=rsa-sha256; d=x.test; i=a@y.test; s=s; h=from; bh=AAAA; b=AAAA", "i= is not within d="},
                         bad{"v=1; a=rsa-sha256; d=x.test; s=s; h=from; bh=AAAA; b=AAAA; t=20; x=10", "x= is before t="}}) {
        INFO(b.text);
        REQUIRE(!parse_signature(b.text, why));
        REQUIRE(why == b.why);
    }
    REQUIRE(parse_signature("v=1; a=rsa-sha256; d=x.test; i=a@sub.x.test; s=s; h=from; bh=AAAA; b=AAAA", why));
    REQUIRE(!parse_key("v=DKIM1; k=rsa; p=", why));
    REQUIRE(why == "key revoked (empty p=)");
    REQUIRE(!parse_key("v=DKIM1; k=dsa; p=AAAA", why));
    REQUIRE(!parse_key("v=DKIM1; s=tls; p=AAAA", why));
    REQUIRE(why == "key is not for email");
    auto k = parse_key("v=DKIM1; k=ed25519; t=y:s; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", why);
    REQUIRE(k);
    REQUIRE(k->ed25519);
    REQUIRE(k->testing);
    REQUIRE(k->strict);
    REQUIRE(k->p.size() == 32);
}

TEST_CASE("dkim: what sign() makes, verification passes, a changed field fails", "[dkim]") {
    const std::string msg = "From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n";
    for (bool ed : {false, true}) {
        INFO((ed ? "ed25519" : "rsa"));
        auto pem = generate_key_pem(ed, 1024);
        REQUIRE(pem);
        auto key = key_from_pem(pem.value(), "Example.COM", "s1");
        REQUIRE(key);
        keyring kr;
        kr.add(key.value());
        REQUIRE(kr.for_domain("mail.example.com").size() == 1);  // a parent's keys sign subdomains
        REQUIRE(kr.for_domain("example.org").empty());
        mail::header_parser hp;
        const size_t used = hp.feed(msg);
        body_hasher bh(canon::relaxed, false, std::nullopt);
        bh.feed(std::string_view(msg).substr(used));
        sign_options o;
        o.headers = {"from", "to", "subject"};
        o.oversign = {"subject"};
        o.now = 1'700'000'000;
        auto sig = sign(hp.fields(), bh.finish(), kr.for_domain("example.com"), o);
        REQUIRE(sig);
        for (const std::string& tampered : {msg, msg.substr(0, msg.find("hi")) + "ho\r\n\r\nbody\r\n"}) {
            const std::string signed_msg = sig.value() + tampered;
            mail::header_parser p2;
            const size_t u2 = p2.feed(signed_msg);
            verification v;
            v.header_section(p2.fields());
            v.body(std::string_view(signed_msg).substr(u2));
            v.end();
            dns_answers answers;
            auto s1 = v.evaluate(answers);
            REQUIRE(s1.need.size() == 1);
            REQUIRE(s1.need[0].name == "s1._domainkey.example.com");
            dns_answer a;
            a.status = dns_status::ok;
            a.names = {key.value().record()};
            answers.put(s1.need[0], a);
            auto s2 = v.evaluate(answers);
            REQUIRE(s2.done);
            REQUIRE(s2.done->size() == 1);
            INFO(s2.done->front().reason);
            REQUIRE(s2.done->front().res == (tampered == msg ? dkim::result::pass : dkim::result::fail));
        }
    }
}

TEST_CASE("dkim: a key directory loads whole or names the file that does not", "[dkim]") {
    namespace fs = std::filesystem;
    char tmpl[] = "/tmp/rw_dkim_keys.XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    const fs::path dir = tmpl;
    struct cleanup {
        fs::path d;
        ~cleanup() { fs::remove_all(d); }
    } gone{dir};
    auto write = [&](const std::string& name, const std::string& text) {
        std::ofstream(dir / name, std::ios::binary) << text;
    };
    auto rsa = generate_key_pem(false, 1024);
    auto ed = generate_key_pem(true);
    REQUIRE(rsa);
    REQUIRE(ed);
    write("s1._domainkey.example.org.pem", rsa.value());
    write("s2._domainkey.example.org.pem", ed.value());
    write("a._domainkey.other.test.pem", ed.value());
    write("notes.txt", "not a key, not a .pem: ignored");
    auto kr = keyring::load_dir(dir.string());
    REQUIRE(kr);
    REQUIRE(kr.value().size() == 3);
    auto keys = kr.value().for_domain("mail.Example.ORG");  // a parent's keys sign for it
    REQUIRE(keys.size() == 2);
    REQUIRE(keys[0].selector == "s1");
    REQUIRE(!keys[0].ed25519);
    REQUIRE(keys[0].bits == 1024);
    REQUIRE(keys[1].ed25519);
    // The keys decoded in one go sign like one read alone.
    auto alone = key_from_pem(rsa.value(), "example.org", "s1");
    REQUIRE(alone);
    REQUIRE(keys[0].record() == alone.value().record());

    write("s3._domainkey.example.org.pem", "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n");
    auto bad = keyring::load_dir(dir.string());
    REQUIRE(!bad);
    REQUIRE_THAT(bad.error(), Catch::Contains("s3._domainkey.example.org.pem") &&
                                  Catch::Contains("not a PEM private key"));
    fs::remove(dir / "s3._domainkey.example.org.pem");
    write("badname.pem", ed.value());
    auto misnamed = keyring::load_dir(dir.string());
    REQUIRE(!misnamed);
    REQUIRE_THAT(misnamed.error(), Catch::Contains("SELECTOR._domainkey.DOMAIN.pem"));
    fs::remove(dir / "badname.pem");
    REQUIRE(keyring::load_dir(dir.string()));
    REQUIRE(keyring::load_dir((dir / "absent").string()).value().size() == 0);  // no directory: no keys
}
