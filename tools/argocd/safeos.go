package main

// The `os` library Argo CD gives scripts: time and date only (util/lua/oslib_safe.go). Its
// behaviour differs from gopher-lua's own os library in small ways that scripts can see, and
// those are kept here: os.time() with an argument needs a table, fields that are not numbers
// fall back to their defaults, and os.date("!...", t) formats t in local time (the "!" is
// honoured only when no time is given).

import (
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

var safeOSFunctions = map[string]lua.LGFunction{
	"time": osTime,
	"date": osDate,
}

// openSafeOS is what Argo CD runs to "open" its os library. It names the *table* library
// (Argo CD's OpenSafeOs passes lua.TabLibName), which is loaded already, and gopher-lua's
// RegisterModule leaves a loaded module as it is: the call changes nothing. So no global `os`
// exists unless the open libraries made one; scripts must write `local os = require("os")`,
// and get the reduced table below, or gopher-lua's full os under open libraries (require
// finds it loaded).
func openSafeOS(L *lua.LState) int {
	L.Push(L.RegisterModule(lua.TabLibName, safeOSFunctions))
	return 1
}

// loadSafeOS is the loader behind require("os") when no os library was opened.
func loadSafeOS(L *lua.LState) int {
	L.Push(L.SetFuncs(L.NewTable(), safeOSFunctions))
	return 1
}

func osTime(L *lua.LState) int {
	if L.GetTop() == 0 {
		L.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	fields := L.CheckTable(1)
	number := func(key string, fallback int) int {
		if value, ok := fields.RawGetString(key).(lua.LNumber); ok {
			return int(value)
		}
		return fallback
	}
	at := time.Date(number("year", -1), time.Month(number("month", -1)), number("day", -1),
		number("hour", 12), number("min", 0), number("sec", 0), 0, time.Local)
	L.Push(lua.LNumber(at.Unix()))
	return 1
}

func osDate(L *lua.LState) int {
	at := time.Now()
	format := "%c"
	if L.GetTop() >= 1 {
		format = L.CheckString(1)
		if strings.HasPrefix(format, "!") {
			at = time.Now().UTC()
			format = strings.TrimLeft(format, "!")
		}
		if L.GetTop() >= 2 {
			at = time.Unix(L.CheckInt64(2), 0)
		}
		if strings.HasPrefix(format, "*t") {
			table := L.NewTable()
			for key, value := range map[string]int{
				"year": at.Year(), "month": int(at.Month()), "day": at.Day(), "hour": at.Hour(),
				"min": at.Minute(), "sec": at.Second(), "wday": int(at.Weekday()) + 1, "yday": 0,
			} {
				table.RawSetString(key, lua.LNumber(value))
			}
			table.RawSetString("isdst", lua.LFalse)
			L.Push(table)
			return 1
		}
	}
	L.Push(lua.LString(strftime(at, format)))
	return 1
}

// dateLayouts maps strftime conversions to Go layouts, as Argo CD's table does; its quirks
// stay (%a is the literal "mon", %x is 15/04/05).
var dateLayouts = map[byte]string{
	'a': "mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "02 Jan 06 15:04 MST", 'd': "02",
	'F': "2006-01-02", 'H': "15", 'I': "03", 'm': "01", 'M': "04", 'p': "PM", 'P': "pm", 'S': "05",
	'x': "15/04/05", 'X': "15:04:05", 'y': "06", 'Y': "2006", 'z': "-0700", 'Z': "MST",
}

func strftime(at time.Time, format string) string {
	var out strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i == len(format)-1 {
			out.WriteByte(c) // a lone % at the end stays as it is
			continue
		}
		i++
		conversion := format[i]
		switch layout, known := dateLayouts[conversion]; {
		case conversion == '%':
			out.WriteByte('%')
		case known:
			out.WriteString(at.Format(layout))
		case conversion == 'w':
			out.WriteString(strconv.Itoa(int(at.Weekday())))
		default:
			out.WriteByte('%')
			out.WriteByte(conversion)
		}
	}
	return out.String()
}
