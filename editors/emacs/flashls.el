;;; flashls.el --- Ghost-text suggestions from flashls over eglot or lsp-mode  -*- lexical-binding: t; -*-

;; Copyright (c) 2026 the flashls authors
;; SPDX-License-Identifier: MIT

;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: convenience, languages, tools

;;; Commentary:

;; flashls is a language server that suggests code from a local quantized
;; model through `textDocument/inlineCompletion'.  Neither eglot 1.9 (Debian
;; 12's) nor lsp-mode before 10.0 shows inline completions, so this package
;; does: as you type it asks flashls for a suggestion and draws it after the
;; cursor as ghost text (an overlay in the face `flashls-ghost').  It works over
;; whichever client manages the buffer, eglot or lsp-mode, and requires
;; neither.
;;
;; - It asks at every edit, `flashls-delay' seconds after it, cancelling the
;;   request in flight, and keeps a suggestion on screen while what you type
;;   agrees with it.
;; - While a suggestion shows, `flashls-suggestion-map' is active: TAB accepts
;;   it all, M-f its next word, M-e its next line, M-n / M-p show the server's
;;   other candidates, C-g dismisses it.  With no suggestion on screen those
;;   keys do what they always do.
;; - It tells the server where the cursor rests (`textDocument/didFocus') and
;;   what you copy (`flashls/didYank'), and asks again when the server has
;;   finished a suggestion it had cut short (`flashls/suggestionFinished').
;;
;; Install the server first (`flashls' on PATH, or set `flashls-command'),
;; then one of these.  With use-package and eglot:
;;
;;   (use-package flashls
;;     :load-path "~/src/flashls/editors/emacs"
;;     :hook (prog-mode . flashls-mode)
;;     :config (flashls-eglot-register))   ; then M-x eglot, or eglot-ensure
;;
;; With lsp-mode, where flashls runs beside the language's own server:
;;
;;   (use-package flashls
;;     :load-path "~/src/flashls/editors/emacs"
;;     :hook (prog-mode . flashls-mode)
;;     :config (with-eval-after-load 'lsp-mode (flashls-lsp-register)))
;;
;; With package-vc (Emacs 29+; the URL of your flashls repository, or the path
;; of a local clone):
;;
;;   (package-vc-install
;;    '(flashls :url "~/src/flashls" :lisp-dir "editors/emacs"))
;;
;; With a plain `load-path':
;;
;;   (add-to-list 'load-path "~/src/flashls/editors/emacs")
;;   (require 'flashls)
;;   (flashls-eglot-register)              ; or (flashls-lsp-register)
;;   (add-hook 'prog-mode-hook #'flashls-mode)
;;
;; `flashls-mode' does nothing in a buffer that no flashls server manages, so
;; it can be on in every `prog-mode' buffer.  The client-specific parts live in
;; flashls-eglot.el and flashls-lsp.el, which the registration functions load.
;; editors/emacs/README.md in the flashls repository says more.

;;; Code:

(require 'cl-lib)
(require 'subr-x)

(defgroup flashls nil
  "Ghost-text code suggestions from the flashls language server."
  :group 'tools
  :prefix "flashls-")

(defcustom flashls-command '("flashls" "serve")
  "The command that starts the flashls language server (over stdio)."
  :type '(repeat string))

(defcustom flashls-server-settings nil
  "Settings for the flashls server, a plist such as (:max_lines 3).
The names are those `flashls serve --help' lists, in snake_case or
camelCase.  They reach the server as `initializationOptions.flashls'."
  :type 'plist)

(defcustom flashls-languages
  '((python-mode . "python") (python-ts-mode . "python")
    (js-mode . "javascript") (js-ts-mode . "javascript")
    (typescript-mode . "typescript") (typescript-ts-mode . "typescript")
    (tsx-ts-mode . "typescriptreact")
    (go-mode . "go") (go-ts-mode . "go")
    (rust-mode . "rust") (rust-ts-mode . "rust")
    (c-mode . "c") (c-ts-mode . "c") (c++-mode . "cpp") (c++-ts-mode . "cpp")
    (java-mode . "java") (java-ts-mode . "java")
    (lua-mode . "lua") (ruby-mode . "ruby") (ruby-ts-mode . "ruby")
    (sh-mode . "shellscript") (bash-ts-mode . "shellscript"))
  "Major modes handed to flashls by the registration functions.
Each comes with the LSP language id the server is told."
  :type '(alist :key-type symbol :value-type string))

(defcustom flashls-delay 0.03
  "Seconds after an edit before a suggestion is asked for.
Each edit restarts the wait and cancels the request in flight, so a
burst of keys asks once.  The server answers typing along a suggestion
from its cache."
  :type 'number)

(defcustom flashls-focus-delay 0.25
  "Seconds the cursor rests before the server is told where it is.
The server then evaluates the prompt there, so that the first keystroke
is answered sooner."
  :type 'number)

(defcustom flashls-yank-commands '(kill-ring-save copy-region-as-kill)
  "Commands whose copied text is reported to the server.
With the server's `recent' context source, copied text goes into its
prompt (`flashls/didYank')."
  :type '(repeat function))

(defface flashls-ghost '((t :inherit shadow))
  "Face of the suggestion drawn after the cursor.")

(defvar flashls-status-functions nil
  "Functions called with each `flashls/status' notification.
Each gets one plist with the keys :state, :message, :uri and :latencyMs
\(any may be nil).  A mode line can show them.")

(defvar flashls-enabled t
  "Whether suggestions are asked for and shown; see `flashls-toggle'.")

(defvar flashls-mode)

;;;; State of a buffer

(defvar-local flashls--suggestion nil
  "The server's suggestions from one place, or nil.
A plist (:start MARKER :texts LIST :index N): each text is to be
inserted at START; the one at INDEX shows, minus what was typed there
since, as long as that agrees with it.")

(defvar-local flashls--pending nil
  "The request in flight, a cons (BACKEND . HANDLE), or nil.
Only its answer is used, and only if the text and point are unchanged.")

(defvar-local flashls--asked nil
  "(TICK . POINT) of the last request: an edit asks once.")

(defvar-local flashls--seen-tick nil
  "The text's modification tick after the last command.")

(defvar-local flashls--cycle nil
  "The step to show when the explicit request in flight answers.")

(defvar-local flashls--overlay nil
  "The overlay that draws the suggestion.")

(defvar-local flashls--showing nil
  "Non-nil while a suggestion shows: `flashls-suggestion-map' is on.")

(defvar-local flashls--timer nil
  "The timer of the request due after the last edit.")

(defvar flashls--focus-timer nil
  "The timer of the pending `textDocument/didFocus'.")

(defvar flashls--focused nil
  "(BUFFER . POINT) reported in `textDocument/didFocus', or due to be.")

;;;; Keys

(defvar flashls-suggestion-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "TAB") #'flashls-accept)
    (define-key map (kbd "<tab>") #'flashls-accept)
    (define-key map (kbd "M-f") #'flashls-accept-word)
    (define-key map (kbd "M-e") #'flashls-accept-line)
    (define-key map (kbd "M-n") #'flashls-next)
    (define-key map (kbd "M-p") #'flashls-previous)
    (define-key map (kbd "C-g") #'flashls-dismiss)
    map)
  "Keys active only while a suggestion shows.
Otherwise the same keys keep their usual bindings.")

(defvar flashls--map-alist `((flashls--showing . ,flashls-suggestion-map))
  "Entry of `emulation-mode-map-alists': above other minor modes' maps.")

;;;; Clients: eglot or lsp-mode, whichever manages the buffer

(defvar flashls--backends nil
  "Clients flashls can work through, each a symbol: `eglot', `lsp-mode'.
flashls-eglot.el and flashls-lsp.el add theirs when loaded.")

(cl-defgeneric flashls--manages-p (backend)
  "Whether a flashls server manages this buffer through BACKEND.")

(cl-defgeneric flashls--position-params (backend)
  "TextDocumentPositionParams of point, as BACKEND makes them.")

(cl-defgeneric flashls--send-request (backend params on-answer)
  "Send BACKEND's flashls server `textDocument/inlineCompletion' PARAMS.
ON-ANSWER gets the result.  Returns a handle for `flashls--cancel-request'.")

(cl-defgeneric flashls--cancel-request (backend handle)
  "Cancel BACKEND's request HANDLE (`$/cancelRequest'), dropping its answer.")

(cl-defgeneric flashls--send-notification (backend method params)
  "Send BACKEND's flashls server the notification METHOD with PARAMS.")

(defun flashls--backend ()
  "The client of the flashls server that manages this buffer, or nil."
  (cl-find-if #'flashls--manages-p flashls--backends))

(defun flashls--notify (method params)
  "Send this buffer's flashls server the notification METHOD with PARAMS."
  (let ((backend (flashls--backend)))
    (when backend
      (flashls--send-notification backend method params))))

(defun flashls--get (object key)
  "The field KEY (a string) of the JSON OBJECT.
OBJECT is a plist (eglot) or a hash table (lsp-mode)."
  (cond ((hash-table-p object) (gethash key object))
        ((listp object) (plist-get object (intern (concat ":" key))))))

(defun flashls--document ()
  "This buffer's TextDocumentIdentifier, as its client makes it."
  (plist-get (flashls--position-params (flashls--backend)) :textDocument))

;;;; Ghost text

(defun flashls--remaining ()
  "What of the shown suggestion is still to come at point, or nil.
Nil when point went before the suggestion's start or what was typed since
disagrees with it."
  (let* ((start (plist-get flashls--suggestion :start))
         (text (nth (plist-get flashls--suggestion :index)
                    (plist-get flashls--suggestion :texts)))
         (typed (- (point) start)))
    (when (and (eq (marker-buffer start) (current-buffer))
               (<= 0 typed) (< typed (length text))
               (string-prefix-p (buffer-substring-no-properties start (point))
                                text))
      (substring text typed))))

(defun flashls--render ()
  "Draw what is left of the suggestion at point.
A suggestion that no longer agrees with the text is forgotten."
  (let ((rest (and flashls--suggestion (flashls--remaining))))
    (if (not rest)
        (flashls--hide)
      (let ((ghost (propertize rest 'face 'flashls-ghost)))
        ;; The cursor stays where typing goes: before the ghost text.
        (put-text-property 0 1 'cursor t ghost)
        (unless (overlayp flashls--overlay)
          (setq flashls--overlay (make-overlay (point) (point))))
        (move-overlay flashls--overlay (point) (point) (current-buffer))
        (overlay-put flashls--overlay 'window (selected-window))
        (overlay-put flashls--overlay 'after-string ghost)
        (setq flashls--showing t)))))

(defun flashls--hide ()
  "Forget the suggestion and remove its ghost text."
  (when flashls--suggestion
    (set-marker (plist-get flashls--suggestion :start) nil))
  (setq flashls--suggestion nil
        flashls--showing nil)
  (when (overlayp flashls--overlay)
    (delete-overlay flashls--overlay)))

(defun flashls--texts (result)
  "The non-empty suggestions of an inline completion RESULT, as strings.
RESULT is a list of items or an InlineCompletionList; a snippet shows as
written."
  (let ((items (if (or (hash-table-p result) (keywordp (car-safe result)))
                   (flashls--get result "items")
                 result)))
    (delq nil (mapcar (lambda (item)
                        (let ((text (flashls--get item "insertText")))
                          (unless (stringp text)
                            (setq text (flashls--get text "value")))
                          (and (stringp text) (not (string-empty-p text))
                               text)))
                      items))))

;;;; Requests

(defun flashls--in-front-p ()
  "Whether this buffer is the selected window's, where the user types."
  (eq (current-buffer) (window-buffer (selected-window))))

(defun flashls--cancel ()
  "Cancel the request in flight, if any."
  (when flashls--pending
    (flashls--cancel-request (car flashls--pending) (cdr flashls--pending))
    (setq flashls--pending nil)))

(defun flashls--request (&optional again invoked)
  "Ask for a suggestion at point, cancelling the request in flight.
Unless AGAIN, nothing is sent when the last request was for this very
text and point.  INVOKED asks explicitly (trigger kind Invoked), which
brings the server's other candidates too."
  (let ((backend (flashls--backend))
        (asked (cons (buffer-chars-modified-tick) (point))))
    (when (and backend flashls-enabled (flashls--in-front-p)
               (or again (not (equal asked flashls--asked))))
      (flashls--cancel)
      (unless invoked
        (setq flashls--cycle nil))      ; a keystroke, not a request to cycle
      (setq flashls--asked asked)
      (let ((params (append (flashls--position-params backend)
                            (list :context
                                  (list :triggerKind (if invoked 1 2)))))
            (request (list backend))
            (buffer (current-buffer)))
        (setq flashls--pending request)
        (setcdr request
                (flashls--send-request
                 backend params
                 (lambda (result)
                   (when (buffer-live-p buffer)
                     (with-current-buffer buffer
                       (flashls--answered request asked result))))))))))

(defun flashls--answered (request asked result)
  "Show RESULT, the answer to REQUEST sent at ASKED, (TICK . POINT).
Only the newest request's answer shows, and only while the text and
point are as they were; an empty answer leaves the shown one."
  (when (eq request flashls--pending)
    (setq flashls--pending nil)
    (let ((texts (flashls--texts result))
          (cycle flashls--cycle))
      (setq flashls--cycle nil)
      (when (and texts (flashls--in-front-p)
                 (equal asked (cons (buffer-chars-modified-tick) (point))))
        (flashls--hide)
        (setq flashls--suggestion
              (list :start (copy-marker (point)) :texts texts
                    :index (if (and cycle (cdr texts))
                               (mod cycle (length texts))
                             0)))
        (flashls--render)))))

(defun flashls--schedule ()
  "Ask after `flashls-delay'; the request in flight is stale: cancel it."
  (when (timerp flashls--timer)
    (cancel-timer flashls--timer))
  (flashls--cancel)
  (let ((buffer (current-buffer)))
    (setq flashls--timer
          (run-at-time flashls-delay nil
                       (lambda ()
                         (when (buffer-live-p buffer)
                           (with-current-buffer buffer
                             (setq flashls--timer nil)
                             (flashls--request))))))))

;;;; What the server hears besides requests

(defun flashls--schedule-focus ()
  "Tell the server where point rests, once it rests `flashls-focus-delay'."
  (let ((here (cons (current-buffer) (point))))
    (unless (equal here flashls--focused)
      (setq flashls--focused here)
      (when (timerp flashls--focus-timer)
        (cancel-timer flashls--focus-timer))
      (setq flashls--focus-timer
            (run-at-time flashls-focus-delay nil
                         #'flashls--send-focus (current-buffer))))))

(defun flashls--send-focus (buffer)
  "Send `textDocument/didFocus' for point in BUFFER, if still in front."
  (setq flashls--focus-timer nil)
  (when (buffer-live-p buffer)
    (with-current-buffer buffer
      (let ((backend (flashls--backend)))
        (when (and backend flashls-mode flashls-enabled (flashls--in-front-p))
          (flashls--send-notification backend "textDocument/didFocus"
                                      (flashls--position-params backend)))))))

(defun flashls--report-yank ()
  "Send what the last command copied, as `flashls/didYank'."
  (when (and (memq this-command flashls-yank-commands) kill-ring
             flashls-enabled (flashls--backend))
    (flashls--notify "flashls/didYank"
                     (list :textDocument (flashls--document)
                           :text (substring-no-properties (car kill-ring))))))

(defun flashls--post-command ()
  "After a command in a `flashls-mode' buffer: keep, drop or ask."
  (when (flashls--in-front-p)
    (flashls--render)                   ; typing along a suggestion keeps it
    (flashls--report-yank)
    (if (eql flashls--seen-tick (buffer-chars-modified-tick))
        (flashls--schedule-focus)       ; no edit: warm where the cursor rests
      (setq flashls--seen-tick (buffer-chars-modified-tick))
      (flashls--schedule))))

(defun flashls--suggestion-finished (uri position)
  "The server has finished a suggestion for URI at POSITION that it cut short.
If that document is in front with point at POSITION, ask again: the
server answers from its cache with all of it.  No other buffer asks."
  (with-current-buffer (window-buffer (selected-window))
    (let ((backend (flashls--backend)))
      (when (and backend flashls-mode flashls-enabled)
        (let* ((here (flashls--position-params backend))
               (point-position (plist-get here :position)))
          (when (and (equal uri (plist-get (plist-get here :textDocument) :uri))
                     (equal (flashls--get position "line")
                            (plist-get point-position :line))
                     (equal (flashls--get position "character")
                            (plist-get point-position :character)))
            ;; Automatic, not Invoked: the cached suggestion, without the
            ;; model work of other candidates.
            (flashls--request 'again)))))))

(defun flashls--status (params)
  "Run `flashls-status-functions' on a `flashls/status' PARAMS."
  (when flashls-status-functions
    (run-hook-with-args 'flashls-status-functions
                        (list :state (flashls--get params "state")
                              :message (flashls--get params "message")
                              :uri (flashls--get params "uri")
                              :latencyMs (flashls--get params "latencyMs")))))

(defun flashls--settings-object (extra)
  "`flashls-server-settings', then the plist EXTRA, as `initializationOptions'."
  (let ((settings (append flashls-server-settings extra)))
    (list :flashls (or settings (make-hash-table)))))

;;;; Commands

(defun flashls--accept-part (&optional regexp)
  "Insert what REGEXP matches at the start of the shown suggestion, or all."
  (let ((rest (flashls--remaining)))
    (when (and rest (or (null regexp) (string-match regexp rest)))
      (insert (if regexp (match-string 0 rest) rest))
      (flashls--render))))

(defun flashls-accept ()
  "Insert the shown suggestion and move past it."
  (interactive)
  (flashls--accept-part))

(defun flashls-accept-word ()
  "Insert the next word of the shown suggestion, with what comes before it."
  (interactive)
  (flashls--accept-part
   "\\`\\(?:[^[:alnum:]_\n]*[[:alnum:]_]+\\|[^[:alnum:]_\n]+\\|\n\\)"))

(defun flashls-accept-line ()
  "Insert the shown suggestion up to the end of its line.
At the end of a line, the next line of it."
  (interactive)
  (flashls--accept-part "\\`\n?[^\n]*"))

(defun flashls--select (step)
  "Show the suggestion STEP away among the server's candidates.
With only one, ask again explicitly, which brings the server's other
candidates (its `candidates' setting), and show the one STEP away."
  (let ((texts (plist-get flashls--suggestion :texts)))
    (if (cdr texts)
        (progn
          (plist-put flashls--suggestion :index
                     (mod (+ (plist-get flashls--suggestion :index) step)
                          (length texts)))
          (flashls--render))
      (setq flashls--cycle step)
      (flashls--request 'again 'invoked))))

(defun flashls-next ()
  "Show the next of the server's suggestions here."
  (interactive)
  (flashls--select 1))

(defun flashls-previous ()
  "Show the previous of the server's suggestions here."
  (interactive)
  (flashls--select -1))

(defun flashls-complete ()
  "Ask for a suggestion at point now, without an edit."
  (interactive)
  (flashls--request 'again))

(defun flashls-dismiss ()
  "Hide the shown suggestion; the next edit asks again."
  (interactive)
  (flashls--cancel)
  (flashls--hide))

(defun flashls-toggle ()
  "Turn suggestions off, or on again, in every buffer."
  (interactive)
  (setq flashls-enabled (not flashls-enabled))
  (dolist (buffer (buffer-list))
    (with-current-buffer buffer
      (when flashls-mode
        (flashls-dismiss))))
  (message "flashls: suggestions %s" (if flashls-enabled "on" "off")))

;;;###autoload
(define-minor-mode flashls-mode
  "Show flashls's suggestions as ghost text while you type.
It acts where a flashls server manages the buffer through eglot or
lsp-mode (see `flashls-eglot-register' and `flashls-lsp-register'),
and nowhere else.

While a suggestion shows:
\\{flashls-suggestion-map}"
  :lighter " flashls"
  (cond
   (flashls-mode
    (add-to-list 'emulation-mode-map-alists 'flashls--map-alist)
    (setq flashls--seen-tick (buffer-chars-modified-tick))
    (add-hook 'post-command-hook #'flashls--post-command nil t))
   (t
    (remove-hook 'post-command-hook #'flashls--post-command t)
    (when (timerp flashls--timer)
      (cancel-timer flashls--timer))
    (flashls-dismiss))))

;;;; Registering the server with a client

(defvar eglot-server-programs)
(declare-function flashls-lsp--register "flashls-lsp")

;;;###autoload
(defun flashls-eglot-register (&optional command)
  "Make eglot start flashls, COMMAND or `flashls-command'.
Each language of `flashls-languages' gets an entry in
`eglot-server-programs' (eglot 1.9 gives a server one language id).
eglot runs one server per buffer: there flashls replaces the
language's other server (lsp-mode can run both)."
  (require 'eglot)
  (require 'flashls-eglot)
  (let ((contact (cons 'flashls-eglot-server (or command flashls-command))))
    (dolist (language (delete-dups (mapcar #'cdr flashls-languages)))
      (let ((modes (cl-loop for (mode . id) in flashls-languages
                            when (equal id language)
                            collect (list mode :language-id language))))
        (setq eglot-server-programs
              (cons (cons modes contact)
                    (cl-remove modes eglot-server-programs
                               :key #'car :test #'equal)))))))

;;;###autoload
(defun flashls-lsp-register (&optional command)
  "Register flashls, COMMAND or `flashls-command', with lsp-mode.
It serves `flashls-languages' as an add-on client, beside the
language's own server."
  (require 'lsp-mode)
  (require 'flashls-lsp)
  (flashls-lsp--register (or command flashls-command)))

(provide 'flashls)
;;; flashls.el ends here
