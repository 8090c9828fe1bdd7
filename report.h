/* report.h: writing results as JSON (see report.c). */
#ifndef GUARD_REPORT_H
#define GUARD_REPORT_H

#include "classify.h"
#include "json.h"

#include <stdio.h>

/* JSON string literal for s[0..n) (control characters and quotes escaped). Always valid UTF-8:
 * each byte that is not part of a well-formed UTF-8 sequence is written as \ufffd (U+FFFD). */
void print_json_str(FILE *f, const char *s, size_t n);
/* A number printed with fmt (e.g. "%.9g"), or null when it is NaN or infinite: JSON has neither. */
void print_json_num(FILE *f, double x, const char *fmt);
/* {"id":ID,"line":N,"error":"msg"} for a batch line (j NULL: the line did not parse, id null);
 * {"error":"msg"} when j is NULL and line is 0 (one conversation). */
void print_error_json(FILE *f, const Json *j, const JsonNode *id, int64_t line, const char *msg);
/* A parsed JSON value printed back as JSON (ids are passed through untouched); NULL prints null. */
void print_json_value(FILE *f, const Json *j, const JsonNode *n);
/* One result object, the shape of ./run --json. When j is set, id (may be NULL) is passed through
 * first, as batch lines need. */
void print_decision_json(FILE *f, const Json *j, const JsonNode *id, const Guard *g, const PromptFormat *pf, const Decision *d);

#endif
