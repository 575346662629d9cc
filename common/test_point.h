/* Named places in docqa's code where a test may hold a real process, so that it sends a signal
 * at a known moment rather than after a sleep that races the process.
 *
 * DOCQA_TEST_PAUSE_AT=<point> makes the first arrival at <point> print "docqa: test: paused at
 * <point> (pid N)" on stderr and wait there until the process receives SIGINT, SIGTERM or
 * SIGHUP; that signal is then handled as it would have been there (by the handler the process
 * had, or by the default action) and, unless that ends the process, it goes on. Unset, or
 * another point: nothing happens. The points are named where they are called (the queue's
 * store points are listed in jobs/queue.h). */
#ifndef DQ_TEST_POINT_H
#define DQ_TEST_POINT_H

void dq_test_point(const char *point);

#endif
