//go:build !race

package dbrouter

const raceEnabled = false
