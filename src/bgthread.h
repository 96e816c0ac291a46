/* bgthread: starting the background threads of a run (the sweep's prefetch and plan-ahead
 * threads, the store's writer) with SIGINT/SIGTERM blocked, so that the sweep's handler always
 * runs on the main thread, which is the one that checks for a stop between row batches. */
#ifndef SQEXP_BGTHREAD_H
#define SQEXP_BGTHREAD_H
#include <pthread.h>

/* Start fn(arg) on *th with the two signals blocked (the mask is inherited from the one set
 * around pthread_create, then restored). 1 if it started, 0 if not (the caller works in line). */
int bgthread_start(pthread_t *th, void *(*fn)(void *), void *arg);

#endif
