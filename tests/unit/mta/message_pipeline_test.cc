// The message pipeline: every consumer sees each header field once, the end
// of the header section at the right offset, and every body byte exactly
// once, whatever the pieces; loops, header limits and forged
// Authentication-Results are found while the message streams.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "mta/smtp/message_pipeline.hh"

using namespace rw;
using namespace rw::mta::smtp;

namespace {

struct recorder : body_consumer {
    std::vector<std::string> fields;
    std::vector<uint64_t> ends;
    std::string bytes;
    int finished = 0;
    void header_field(const mail::header_field& f) override { fields.push_back(f.raw); }
    void headers_end(uint64_t off) override { ends.push_back(off); }
    void body(std::string_view b) override {
        REQUIRE(ends.size() == 1);  // body bytes only after the header section
        bytes += b;
    }
    void end() override { ++finished; }
};

struct run {
    recorder r;
    message_pipeline p;
    explicit run(pipeline_options o = {}) : p(std::move(o)) { p.add(&r); }
};

// Feeds msg in pieces of `step` bytes.
void feed(run& x, std::string_view msg, size_t step) {
    for (size_t i = 0; i < msg.size(); i += step)
        x.p.feed(msg.substr(i, step));
    x.p.finish();
}

}  // namespace

TEST_CASE("pipeline: fields, the end of the header and the body, whatever the pieces", "[mta][pipeline]") {
    const std::string msg =
        "Received: from a\r\n\tby b; Mon, 7 Dec 2026 06:00:00 +0000\r\n"
        "Subject: hello\r\n  world\r\n"
        "From: a@example.com\r\n"
        "\r\n"
        "line one\r\n.\r\nline three\r\n";
    const uint64_t body_at = msg.find("\r\n\r\n") + 4;
    for (size_t step : {size_t(1), size_t(2), size_t(7), size_t(64), msg.size()}) {
        run x;
        feed(x, msg, step);
        INFO("step " << step);
        REQUIRE(!x.p.failure());
        REQUIRE(x.r.fields.size() == 3);
        REQUIRE(x.r.fields[1] == "Subject: hello\r\n  world\r\n");
        REQUIRE(x.r.ends == std::vector<uint64_t>{body_at});
        REQUIRE(x.r.bytes == msg.substr(body_at));
        REQUIRE(x.r.finished == 1);
        REQUIRE(x.p.received() == 1);
        REQUIRE(x.p.subject() == "hello  world");
    }
}

TEST_CASE("pipeline: a message without a header section is all body", "[mta][pipeline]") {
    const std::string msg = "just a body line\r\nand another\r\n";
    for (size_t step : {size_t(1), size_t(3), msg.size()}) {
        run x;
        feed(x, msg, step);
        INFO("step " << step);
        REQUIRE(x.r.fields.empty());
        REQUIRE(x.r.ends == std::vector<uint64_t>{0});
        REQUIRE(x.r.bytes == msg);
    }
}

TEST_CASE("pipeline: a mail loop and a header past its limits are refused", "[mta][pipeline]") {
    std::string loop;
    for (int i = 0; i < 4; ++i)
        loop += "Received: from x\r\n";
    loop += "\r\nbody\r\n";
    pipeline_options o;
    o.max_received = 3;
    run x(o);
    feed(x, loop, 5);
    REQUIRE(x.p.failure());
    REQUIRE(x.p.failure()->r.code == 554);
    REQUIRE(x.p.failure()->r.enhanced == "5.4.6");
    REQUIRE(x.r.bytes.empty());  // nothing passes once refused
    REQUIRE(x.r.finished == 0);

    pipeline_options small;
    small.limits.max_fields = 2;
    run y(small);
    feed(y, "A: 1\r\nB: 2\r\nC: 3\r\n\r\nbody\r\n", 4);
    REQUIRE(y.p.failure());
    REQUIRE(y.p.failure()->r.code == 552);
    REQUIRE(y.p.failure()->r.text.find("too many header fields") != std::string::npos);
}

TEST_CASE("pipeline: Authentication-Results with our id are omitted, others kept", "[mta][pipeline]") {
    const std::string msg =
        "Authentication-Results: MX.example.net; spf=pass\r\n"
        "From: a@example.com\r\n"
        "Authentication-Results: (c) mx.example.net;\r\n\tdkim=pass\r\n"
        "Authentication-Results: mx.example.netx; spf=pass\r\n"
        "Authentication-Results: other.example; spf=fail\r\n"
        "\r\n"
        "Authentication-Results: mx.example.net; in the body\r\n";
    pipeline_options o;
    o.omit_results_of = "mx.example.net";
    run x(o);
    feed(x, msg, 3);
    const auto& om = x.p.omitted();
    REQUIRE(om.size() == 2);
    REQUIRE(msg.substr(om[0].offset, om[0].length) == "Authentication-Results: MX.example.net; spf=pass\r\n");
    REQUIRE(msg.substr(om[1].offset, om[1].length) == "Authentication-Results: (c) mx.example.net;\r\n\tdkim=pass\r\n");
    // Without an id to protect, nothing is left out.
    run y;
    feed(y, msg, 3);
    REQUIRE(y.p.omitted().empty());
}
