/* report.h: writing results as JSON (see report.c). */
#ifndef GUARD_REPORT_H
#define GUARD_REPORT_H

#include "classify.h"
#include "json.h"

#include <stdio.h>

/* JSON string literal for s[0..n) (control characters and quotes escaped). */
void print_json_str(FILE *f, const char *s, size_t n);
/* A parsed JSON value printed back as JSON (ids are passed through untouched); NULL prints null. */
void print_json_value(FILE *f, const Json *j, const JsonNode *n);
/* One result object, the shape of ./run --json. When j is set, id (may be NULL) is passed through
 * first, as batch lines need. */
void print_decision_json(FILE *f, const Json *j, const JsonNode *id, const Guard *g, const PromptFormat *pf, const Decision *d);

#endif
