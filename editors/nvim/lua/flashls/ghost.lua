--- flashls's own ghost text ("live" mode): a request at every keystroke in insert mode, the
--- pending one cancelled, and the newest answer kept on screen while what you type agrees
--- with it, as VS Code does.
---
--- Why not `vim.lsp.inline_completion` (Neovim 0.12): it asks only once 200 ms pass without a
--- keystroke, so someone typing steadily (a key every 100-200 ms) sees no suggestion until
--- they stop. flashls answers typing from its cache in milliseconds; this asks at once.
--- It needs only extmarks with inline virtual text, so it works from Neovim 0.10.
---
--- State: one record per attached buffer in `states`. Invariants: at most one request per
--- buffer is pending (`pending`), and only its answer is used, and only if the buffer and
--- cursor are as they were when it was sent; `suggestion`, when set, holds the server's
--- texts from the place (`row`, `col`) where they were asked for, and the one at `index`
--- shows minus what was typed there since, as long as that agrees with it.

local M = {}

local api = vim.api
local namespace = api.nvim_create_namespace('flashls.ghost')
local HIGHLIGHT = 'FlashlsGhost'
local TRIGGER_AUTOMATIC = 2 -- lsp.InlineCompletionTriggerKind.Automatic
local TRIGGER_INVOKED = 1

---@class flashls.ghost.Suggestion
---@field row integer 0-based row of the cursor it was asked for
---@field col integer 0-based byte column of that cursor
---@field texts string[] the server's suggestions, each to be inserted at (row, col)
---@field index integer the one shown

---@class flashls.ghost.State
---@field client_id integer
---@field enabled fun(): boolean whether suggestions are on
---@field pending? integer the id of the request in flight
---@field asked? string changedtick and cursor of the last request (one keystroke fires
---  TextChangedI and CursorMovedI: it asks once)
---@field suggestion? flashls.ghost.Suggestion
---@field cycle? integer the step to show when the explicit request in flight answers

---@type table<integer, flashls.ghost.State>
local states = {}

api.nvim_set_hl(0, HIGHLIGHT, { link = 'Comment', default = true })

--- Calls a client method on Neovim 0.11+ (methods) and 0.10 (functions in fields).
function M.call(client, method, ...)
  if vim.fn.has('nvim-0.11') == 1 then
    return client[method](client, ...)
  end
  return client[method](...)
end
local call = M.call

--- The cursor (0-based row, byte column) if `bufnr` is in the current window.
---@return integer?, integer?
local function cursor(bufnr)
  local win = api.nvim_get_current_win()
  if api.nvim_win_get_buf(win) ~= bufnr then
    return nil, nil
  end
  local position = api.nvim_win_get_cursor(win)
  return position[1] - 1, position[2]
end

--- What of the suggestion is still to come at the cursor; nil when the cursor left its line
--- or went before it, or what was typed there since disagrees with it.
---@param bufnr integer
---@param suggestion flashls.ghost.Suggestion
---@return string?
local function remaining(bufnr, suggestion)
  local row, col = cursor(bufnr)
  if row ~= suggestion.row or col < suggestion.col then
    return nil
  end
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  local typed = line:sub(suggestion.col + 1, col)
  local text = suggestion.texts[suggestion.index]
  if text:sub(1, #typed) ~= typed or #text == #typed then
    return nil
  end
  return text:sub(#typed + 1)
end

--- Draws what is left of the suggestion at the cursor, or forgets a suggestion that no
--- longer agrees with the text.
---@param bufnr integer
function M.render(bufnr)
  if not api.nvim_buf_is_valid(bufnr) then
    return
  end
  api.nvim_buf_clear_namespace(bufnr, namespace, 0, -1)
  local state = states[bufnr]
  if not (state and state.suggestion) then
    return
  end
  local rest = remaining(bufnr, state.suggestion)
  if not rest then
    state.suggestion = nil
    return
  end
  local lines = vim.split(rest, '\n', { plain = true })
  local virt_lines = {}
  for index = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[index], HIGHLIGHT } }
  end
  local row, col = cursor(bufnr)
  api.nvim_buf_set_extmark(bufnr, namespace, row, col, {
    virt_text = { { lines[1], HIGHLIGHT } },
    virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
  })
end

--- Cancels the request in flight, if any.
---@param state flashls.ghost.State
local function cancel(state)
  if state.pending then
    local client = vim.lsp.get_client_by_id(state.client_id)
    if client then
      call(client, 'cancel_request', state.pending)
    end
    state.pending = nil
  end
end

---@param result? lsp.InlineCompletionItem[]|lsp.InlineCompletionList
---@return string[]
local function texts_of(result)
  local texts = {}
  for _, item in ipairs(result and (result.items or result) or {}) do
    local text = item.insertText
    if type(text) == 'table' then
      text = text.value -- a snippet: shown as written
    end
    if type(text) == 'string' and text ~= '' then
      texts[#texts + 1] = text
    end
  end
  return texts
end

--- Asks for a suggestion at the cursor, cancelling the request in flight. Unless `again`,
--- nothing is sent when the last request was for this very text and cursor.
---@param bufnr integer
---@param again? boolean
function M.request(bufnr, again)
  local state = states[bufnr]
  local client = state and vim.lsp.get_client_by_id(state.client_id)
  local row, col = cursor(bufnr)
  if not (client and row and state.enabled()) then
    return
  end
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local asked = ('%d:%d:%d'):format(tick, row, col)
  if asked == state.asked and not again then
    return
  end
  cancel(state)
  if not again then
    state.cycle = nil -- a keystroke, not a request to cycle
  end
  state.asked = asked
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = again and TRIGGER_INVOKED or TRIGGER_AUTOMATIC }
  local id
  local function on_answer(err, result)
    if state.pending ~= id or id == nil then
      return -- cancelled or superseded
    end
    state.pending = nil
    local now_row, now_col = cursor(bufnr)
    if err or now_row ~= row or now_col ~= col
        or api.nvim_buf_get_changedtick(bufnr) ~= tick then
      return
    end
    local texts = texts_of(result)
    local cycle = state.cycle
    state.cycle = nil
    if #texts > 0 then
      local index = (cycle and #texts > 1) and cycle % #texts + 1 or 1
      state.suggestion = { row = row, col = col, texts = texts, index = index }
      M.render(bufnr)
    end
  end
  local sent
  sent, id = call(client, 'request', 'textDocument/inlineCompletion', params, on_answer, bufnr)
  state.pending = sent and id or nil
end

--- Forgets the suggestion and cancels the request in flight (leaving insert mode or the
--- buffer, or suggestions turned off).
---@param bufnr integer
function M.clear(bufnr)
  local state = states[bufnr]
  if state then
    cancel(state)
    state.suggestion = nil
    state.asked = nil
  end
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, namespace, 0, -1)
  end
end

--- The part of the suggestion that <Tab> would insert, if one shows.
---@param bufnr integer
---@return string?
function M.visible(bufnr)
  local state = states[bufnr]
  return state and state.suggestion and remaining(bufnr, state.suggestion) or nil
end

--- The first `word` or `line` of a suggestion's `text`. A word is the blanks before it and
--- a run of word characters (letters, digits, `_`, any non-ASCII) or of other characters;
--- at a line break, the break and the next line's indent. A line runs to the first line
--- break after something other than blanks, without that break (so that the cursor stays
--- at the end of the line taken).
---@param text string
---@param unit 'word'|'line'
---@return string
function M.part(text, unit)
  if unit == 'line' then
    local first = text:find('%S')
    local newline = first and text:find('\n', first, true)
    return newline and text:sub(1, newline - 1) or text
  end
  return text:match('^\n[ \t]*') or text:match('^[ \t]*[%w_\128-\255]+')
    or text:match('^[ \t]*[^%w_%s\128-\255]+') or text:match('^[ \t]+') or text
end

--- Inserts `text` at (`row`, `col`) of the current window's buffer and puts the cursor
--- after it; the new cursor (0-based row, byte column).
---@param bufnr integer
---@param row integer
---@param col integer
---@param text string
---@return integer, integer
function M.insert(bufnr, row, col, text)
  local lines = vim.split(text, '\n', { plain = true })
  api.nvim_buf_set_text(bufnr, row, col, row, col, lines)
  local last = #lines == 1 and col + #lines[1] or #lines[#lines]
  api.nvim_win_set_cursor(0, { row + #lines, last })
  return row + #lines - 1, last
end

--- Inserts what is left of the suggestion at the cursor, or only its next `unit` (`word`
--- or `line`), and moves past it; false if none shows. What is left of it after a part
--- stays on screen, also when the part ended on another line.
---@param bufnr? integer
---@param unit? 'word'|'line'
---@return boolean
function M.accept(bufnr, unit)
  bufnr = bufnr or api.nvim_get_current_buf()
  local rest = M.visible(bufnr)
  local row, col = cursor(bufnr)
  if not (rest and row) then
    return false
  end
  local taken = unit and M.part(rest, unit) or rest
  local new_row, new_col = M.insert(bufnr, row, col, taken)
  if new_row ~= row and #taken < #rest then
    -- Typing along is followed on the suggestion's own line only: anchor the rest here.
    states[bufnr].suggestion =
      { row = new_row, col = new_col, texts = { rest:sub(#taken + 1) }, index = 1 }
  end
  M.render(bufnr)
  return true
end

--- Shows the next (`count` 1) or previous (-1) of the server's suggestions.
---@param bufnr integer
---@param count integer
--- With only one suggestion so far, asks again explicitly (trigger kind Invoked), which
--- brings the server's other candidates (its `candidates` setting), and shows the next.
function M.select(bufnr, count)
  local state = states[bufnr]
  local suggestion = state and state.suggestion
  if suggestion and #suggestion.texts > 1 then
    suggestion.index = (suggestion.index - 1 + count) % #suggestion.texts + 1
    M.render(bufnr)
  elseif state then
    state.cycle = count
    M.request(bufnr, true)
  end
end

--- Starts live ghost text in `bufnr` for the client `client_id`.
---@param bufnr integer
---@param client_id integer
---@param enabled fun(): boolean
function M.attach(bufnr, client_id, enabled)
  states[bufnr] = { client_id = client_id, enabled = enabled }
  local group = api.nvim_create_augroup('flashls.live.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.render(bufnr) -- typing along a suggestion keeps it
      M.request(bufnr)
    end,
  })
  api.nvim_create_autocmd('InsertEnter', {
    group = group,
    buffer = bufnr,
    -- The cursor of `A` or `o` is in place only once insert mode has started.
    callback = vim.schedule_wrap(function()
      M.request(bufnr)
    end),
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.clear(bufnr)
    end,
  })
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    buffer = bufnr,
    callback = function(args)
      if args.data and args.data.client_id == client_id then
        M.clear(bufnr)
        states[bufnr] = nil
        api.nvim_del_augroup_by_id(group)
      end
    end,
  })
end

--- Whether live ghost text runs in `bufnr`.
---@param bufnr integer
function M.attached(bufnr)
  return states[bufnr] ~= nil
end

return M
