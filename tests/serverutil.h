/* tests/serverutil.h: the server tests' side of tests/httpclient.h (cmocka failures, the fixture
 * model). */
#ifndef GUARD_SERVERUTIL_H
#define GUARD_SERVERUTIL_H

#include "testutil.h"

#include "httpclient.h"
#include "json.h"

/* o's member key; fails the test when the answer lacks it. */
static inline const JsonNode *need(const Json *j, const JsonNode *o, const char *key) {
    const JsonNode *n = json_get(j, o, key);
    if (!n) fail_msg("no \"%s\" in the answer", key);
    return n;
}

/* Start ./run MODEL --serve --port 0 ARGS; fails the test if it is not healthy within 30 s. */
static inline void ts_start(TestServer *s, const char *model, const char *args) {
    /* the servers' cache files go to this test's own directory, not the user's ~/.cache */
    static char xdg[600];
    if (!xdg[0]) {
        snprintf(xdg, sizeof xdg, "%s/xdg-cache", test_tmpdir());
        mkdir(xdg, 0700);
        setenv("XDG_CACHE_HOME", xdg, 1);
    }
    if (ts_spawn(s, "./run", model, args, test_tmpdir(), 30)) fail_msg("the server did not start or never became healthy (log %s)", s->log);
}

#endif
