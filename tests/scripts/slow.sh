#!/bin/bash
# Test script: a shell script with child processes, for cancel, time limit and lost workers.
# It never ends by itself: the tests check the whole process group is killed.
echo "[STAGE] start"
echo "input: $1"
sleep 300 &
echo "background child $!"
echo "[PROGRESS] 1/2"
echo "[STAGE] wait"
sleep 300
wait
