// Command linearizability checks a key-value history recorded by rc-node's tests with
// Porcupine (github.com/anishathalye/porcupine), an independent, well-known checker.
//
// Input (stdin): a JSON array of operations
//
//	{"client":0,"op":"put"|"get","key":"k","value":"v","found":true,"call":ns,"ret":ns,"unknown":false}
//
// For a get, value/found are what was read. An operation whose outcome is unknown (timeout,
// connection lost, "outcome_unknown") has unknown=true: it may or may not have taken effect, at
// any time after its call, so it is given a return time after every other operation.
// Failed operations that certainly did not take effect must be left out by the recorder.
//
// Exit status: 0 linearizable, 1 not linearizable, 2 bad input, 3 checker timed out.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

type record struct {
	Client  int    `json:"client"`
	Op      string `json:"op"`
	Key     string `json:"key"`
	Value   string `json:"value"`
	Found   bool   `json:"found"`
	Call    int64  `json:"call"`
	Ret     int64  `json:"ret"`
	Unknown bool   `json:"unknown"`
}

type input struct {
	op    string
	key   string
	value string
}

type output struct {
	value   string
	found   bool
	unknown bool
}

// state of one key: its value and whether it exists.
type state struct {
	value  string
	exists bool
}

var model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(input).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return state{} },
	Step: func(s, in, out interface{}) (bool, interface{}) {
		st, i, o := s.(state), in.(input), out.(output)
		switch i.op {
		case "put":
			return true, state{value: i.value, exists: true}
		case "delete":
			return true, state{}
		default: // get
			if o.unknown {
				return true, st
			}
			return o.found == st.exists && (!o.found || o.value == st.value), st
		}
	},
	Equal: func(a, b interface{}) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(input), out.(output)
		if i.op == "get" {
			return fmt.Sprintf("get(%s) -> %q found=%v", i.key, o.value, o.found)
		}
		return fmt.Sprintf("%s(%s, %q)", i.op, i.key, i.value)
	},
}

func main() {
	var recs []record
	if err := json.NewDecoder(os.Stdin).Decode(&recs); err != nil {
		fmt.Fprintln(os.Stderr, "bad history:", err)
		os.Exit(2)
	}
	var maxRet int64
	for _, r := range recs {
		if r.Ret > maxRet {
			maxRet = r.Ret
		}
	}
	ops := make([]porcupine.Operation, 0, len(recs))
	for _, r := range recs {
		ret := r.Ret
		if r.Unknown {
			ret = maxRet + 1
		}
		ops = append(ops, porcupine.Operation{
			ClientId: r.Client,
			Input:    input{op: r.Op, key: r.Key, value: r.Value},
			Call:     r.Call,
			Output:   output{value: r.Value, found: r.Found, unknown: r.Unknown},
			Return:   ret,
		})
	}
	res := porcupine.CheckOperationsTimeout(model, ops, 60*time.Second)
	switch res {
	case porcupine.Ok:
		fmt.Printf("linearizable: %d operations\n", len(ops))
	case porcupine.Illegal:
		fmt.Printf("NOT linearizable: %d operations\n", len(ops))
		os.Exit(1)
	default:
		fmt.Println("checker timed out")
		os.Exit(3)
	}
}
