// The uWebSockets pub/sub server for bench/fanout_compare.py: what `tether serve` does in
// the fan-out cases, with uWebSockets' own topics. A text message from a client subscribes
// it to the topic of that name and is answered "ok"; POST /publish/<topic> publishes its
// body as one text message to that topic (uWebSockets encodes it once and writes it to
// every subscriber from the publishing call, corked) and answers "ok". No compression
// unless the second argument is "deflate": then permessage-deflate with uWebSockets' shared
// compressor (no context takeover), and publications published with compression. No
// logging; a subscriber over 1 MiB of backpressure is closed (tether's slow-consumer
// limit). Built by bench/fanout_compare.py against a uWebSockets checkout given to it;
// nothing of uWebSockets is committed here.
// usage: uws_fanout PORT [deflate]
#include "App.h"
#include <cstdio>
#include <cstdlib>
#include <string>

struct PerSocket {};

int main(int argc, char **argv) {
    int port = argc > 1 ? std::atoi(argv[1]) : 9001;
    bool deflate = argc > 2 && std::string(argv[2]) == "deflate";
    uWS::App *app = new uWS::App();
    app->ws<PerSocket>("/*", {
        .compression = deflate ? uWS::SHARED_COMPRESSOR : uWS::DISABLED,
        .maxPayloadLength = 64 * 1024,
        .idleTimeout = 120,
        .maxBackpressure = 1024 * 1024,
        .closeOnBackpressureLimit = true,
        .message = [](auto *ws, std::string_view message, uWS::OpCode) {
            ws->subscribe(message);
            ws->send("ok", uWS::OpCode::TEXT);
        },
    }).post("/publish/:topic", [app, deflate](auto *res, auto *req) {
        std::string topic(req->getParameter(0));
        auto *body = new std::string();
        res->onAborted([body]() { delete body; });
        res->onData([app, res, topic, body, deflate](std::string_view chunk, bool last) {
            body->append(chunk);
            if (last) {
                app->publish(topic, *body, uWS::OpCode::TEXT, deflate);
                delete body;
                res->end("ok");
            }
        });
    }).listen("127.0.0.1", port, [port](auto *listen) {
        if (listen) {
            std::printf("uws fanout on ws://127.0.0.1:%d/\n", port);
            std::fflush(stdout);
        } else {
            std::fprintf(stderr, "uws fanout: cannot listen on %d\n", port);
            std::exit(1);
        }
    }).run();
    return 0;
}
