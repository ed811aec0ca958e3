;;; drive.el --- Drives flashls.el in a real Emacs for tests/test_editors_emacs.py  -*- lexical-binding: t; -*-

;;; Commentary:

;; Run as `emacs --batch -l drive.el'.  It starts flashls through eglot or
;; lsp-mode (FLASHLS_EMACS_CLIENT) with the command FLASHLS_EMACS_CMD (a JSON
;; list), then runs the steps of FLASHLS_EMACS_STEPS (a JSON list of lists):
;;
;;   ["open", FILE, LINE, COL]  open FILE, wait for flashls, put point at LINE
;;                              (1-based) and COL (0-based, characters)
;;   ["goto", LINE, COL]        move there with a command (<f12>)
;;   ["type", TEXT, MS]         type TEXT a character every MS milliseconds
;;   ["type_along", N, MS]      type the shown suggestion's next N characters
;;   ["key", KEYS]              press KEYS (`kbd' syntax), e.g. "TAB", "M-f";
;;                              timers wait for the next step that waits
;;   ["wait_ghost", MS]         wait up to MS for ghost text (a new one if
;;                              one showed before the last key)
;;   ["wait_status", STATE, MS] wait for a `flashls/status' of STATE for the
;;                              current file, sent after this step began
;;   ["wait_finished", MS]      wait for `flashls/suggestionFinished' and the
;;                              ghost text asked for after it
;;   ["copy_lines", LINE, N]    select N lines from LINE, press M-w, go back
;;   ["split"]                  split the window (C-x 2), go to the new one
;;   ["snapshot"]               note the line at point, the ghost text there
;;                              and the last command
;;   ["rest", MS]               let MS pass
;;   ["save"]                   save the buffer (C-x C-s)
;;
;; Keys go through the command loop with `execute-kbd-macro', so keymaps,
;; `post-command-hook' and timers act as they do when a user types.  The
;; report (FLASHLS_EMACS_RESULT, JSON) holds what was shown and sent, with
;; times in milliseconds since start.  Every wait is bounded; the exit status
;; is 0 only when all steps passed.
;;
;; With FLASHLS_EMACS_INTERACTIVE set it only sets up and opens the first
;; file, for a person (or tmux) to type in, and writes FLASHLS_EMACS_RESULT
;; once flashls manages the buffer.

;;; Code:

(require 'cl-lib)
(require 'json)
(require 'subr-x)

(defconst drive--root
  (file-name-directory (directory-file-name
                        (file-name-directory (or load-file-name buffer-file-name))))
  "editors/emacs.")

;; No native compilation of the installed packages in the background: it would
;; take the CPU from the server while the tests measure.
(setq native-comp-deferred-compilation nil
      inhibit-startup-screen t
      warning-minimum-level :error)
(package-initialize)                    ; the packages' autoloads, as in a session
(add-to-list 'load-path drive--root)
(require 'flashls)

(defvar drive--start (float-time))
(defvar drive--report (list (cons 'stage "setup")))
(defvar drive--requests nil)
(defvar drive--shown nil)
(defvar drive--statuses nil)
(defvar drive--finished nil)
(defvar drive--sent nil)
(defvar drive--last-key-ms 0)
(defvar drive--shown-before-key 0 "How many ghost texts were noted before the last key.")
(defvar drive--target nil "(LINE . COL) for the <f12> command.")

(defun drive--env (name &optional default)
  "Environment variable FLASHLS_EMACS_NAME, or DEFAULT."
  (or (getenv (concat "FLASHLS_EMACS_" name)) default))

(defun drive--ms ()
  "Milliseconds since the driver started."
  (round (* 1000 (- (float-time) drive--start))))

(defun drive--set (key value)
  "Put KEY with VALUE in the report."
  (setf (alist-get key drive--report) value))

(defun drive--add (key value)
  "Add VALUE at the end of the report's list KEY."
  (drive--set key (append (alist-get key drive--report) (list value))))

(defun drive--file-of (uri)
  "The file name at the end of URI."
  (and (stringp uri) (file-name-nondirectory uri)))

;;;; What flashls.el does, recorded

(defun drive--record-request (_backend params _on-answer)
  "Note an inline completion request with PARAMS."
  (let ((position (plist-get params :position)))
    (push `((file . ,(drive--file-of (plist-get (plist-get params :textDocument) :uri)))
            (line . ,(plist-get position :line))
            (character . ,(plist-get position :character))
            (trigger . ,(plist-get (plist-get params :context) :triggerKind))
            (sent_ms . ,(drive--ms)))
          drive--requests)))

(defun drive--record-notification (_backend method params)
  "Note a notification METHOD with PARAMS sent to the server."
  (push `((method . ,method)
          (file . ,(drive--file-of (plist-get (plist-get params :textDocument) :uri)))
          (position . ,(plist-get params :position))
          (text . ,(plist-get params :text))
          (t_ms . ,(drive--ms)))
        drive--sent))

(defun drive--record-finished (uri position)
  "Note a `flashls/suggestionFinished' for URI at POSITION."
  (push `((file . ,(drive--file-of uri))
          (line . ,(flashls--get position "line"))
          (character . ,(flashls--get position "character"))
          (t_ms . ,(drive--ms)))
        drive--finished))

(defun drive--record-status (status)
  "Note a `flashls/status' STATUS."
  (push `((state . ,(plist-get status :state))
          (message . ,(plist-get status :message))
          (file . ,(drive--file-of (plist-get status :uri)))
          (t_ms . ,(drive--ms)))
        drive--statuses))

(advice-add 'flashls--send-request :before #'drive--record-request)
(advice-add 'flashls--send-notification :before #'drive--record-notification)
(advice-add 'flashls--suggestion-finished :before #'drive--record-finished)
(add-hook 'flashls-status-functions #'drive--record-status)

(defun drive--ghost ()
  "The ghost text drawn at point in the current buffer, or nil."
  (cl-loop for overlay in (overlays-in (point) (point))
           for text = (overlay-get overlay 'after-string)
           when (and text (eq (get-text-property 0 'face text) 'flashls-ghost))
           return (substring-no-properties text)))

(defun drive--note-shown ()
  "Note the ghost text at point when it differs from the last noted."
  (let ((text (drive--ghost)))
    (unless (equal text (alist-get 'text (car drive--shown)))
      (push `((text . ,text) (t_ms . ,(drive--ms))) drive--shown))
    text))

;;;; Waiting and typing

(defun drive--pump (ms)
  "Let MS milliseconds pass, running process output and timers."
  (let ((until (+ (float-time) (/ ms 1000.0))))
    (while (< (float-time) until)
      (accept-process-output nil 0.01)
      (drive--note-shown))))

(defun drive--wait (ms predicate)
  "Poll PREDICATE until it returns non-nil, at most MS; its value or nil."
  (let ((until (+ (float-time) (/ ms 1000.0)))
        value)
    (while (and (not (setq value (funcall predicate)))
                (< (float-time) until))
      (accept-process-output nil 0.01)
      (drive--note-shown))
    value))

(defun drive--press (keys)
  "Press KEYS, a key vector or string, through the command loop."
  (setq drive--last-key-ms (drive--ms)
        drive--shown-before-key (length drive--shown))
  (execute-kbd-macro keys)
  (drive--note-shown))

(defun drive--goto-target ()
  "Move to `drive--target' (bound to <f12>, so it runs as a command)."
  (interactive)
  (goto-char (point-min))
  (forward-line (1- (car drive--target)))
  (forward-char (cdr drive--target)))

(global-set-key (kbd "<f12>") #'drive--goto-target)

(defun drive--fail (format-string &rest args)
  "Stop with an error message made of FORMAT-STRING and ARGS."
  (error "%s" (apply #'format format-string args)))

;;;; Starting a client

(defun drive--configure (client command)
  "Set up CLIENT (\"eglot\" or \"lsp-mode\") to start flashls with COMMAND."
  (setq flashls-command command)
  (pcase client
    ("eglot"
     (require 'eglot)
     (setq eglot-autoshutdown t
           eglot-events-buffer-size 0)
     (flashls-eglot-register)
     (add-hook 'python-mode-hook #'eglot-ensure))
    ("lsp-mode"
     (require 'lsp-mode)
     (setq lsp-client-packages nil
           lsp-enabled-clients '(flashls)
           lsp-enable-snippet nil
           lsp-keep-workspace-alive nil
           lsp-restart 'ignore
           lsp-session-file (expand-file-name "lsp-session" temporary-file-directory))
     (flashls-lsp-register))
    (_ (drive--fail "unknown client %s" client)))
  (add-hook 'python-mode-hook #'flashls-mode))

(defun drive--attach (path client)
  "Open PATH and wait until CLIENT's flashls server manages it."
  (find-file path)
  (when (equal client "lsp-mode")
    (lsp-workspace-folders-add (file-name-directory path))
    (lsp))
  (let ((started (drive--ms)))
    ;; eglot-ensure connects after the next command, as in a user's session.
    (setq drive--target (cons (line-number-at-pos) (current-column)))
    (drive--press (kbd "<f12>"))
    (unless (drive--wait (* 1000 (string-to-number (drive--env "ATTACH_S" "60")))
                         #'flashls--backend)
      (drive--fail "flashls did not start for %s" path))
    (unless (alist-get 'attach_ms drive--report)
      (drive--set 'attach_ms (- (drive--ms) started))
      (drive--set 'completion_provider (drive--completion-provider client)))))

(defun drive--completion-provider (client)
  "Whether the flashls server offered CLIENT completion items (it should not)."
  (if (if (equal client "eglot")
          (plist-get (eglot--capabilities (eglot-current-server))
                     :completionProvider)
        (gethash "completionProvider"
                 (lsp--workspace-server-capabilities (flashls-lsp--workspace))))
      t
    :json-false))

;;;; Steps

(defun drive--lines ()
  "The buffer's lines."
  (split-string (buffer-substring-no-properties (point-min) (point-max)) "\n"))

(defun drive--shown-since (ms)
  "Ghost text first noted at or after MS, or nil."
  (cl-loop for entry in (reverse drive--shown)
           when (and (>= (alist-get 't_ms entry) ms) (alist-get 'text entry))
           return entry))

(defun drive--step-open (path line col client)
  "Open PATH with CLIENT and put point at LINE and COL."
  (drive--attach path client)
  (setq drive--target (cons line col))
  (drive--goto-target)
  (drive--add 'opened `((file . ,(file-name-nondirectory path))
                        (lines . ,(vconcat (drive--lines))))))

(defun drive--step-type (text interval)
  "Type TEXT, a character every INTERVAL ms."
  (dolist (char (string-to-list text))
    (drive--press (vector char))
    (drive--pump interval)))

(defun drive--step-type-along (count interval)
  "Type the next COUNT characters of the ghost text, INTERVAL ms apart."
  (let (steps)
    (dotimes (_ count)
      (let ((shown (or (drive--ghost) (drive--fail "no ghost text to type along")))
            (requests (length drive--requests)))
        (drive--press (vector (aref shown 0)))
        (drive--pump interval)
        (push `((character . ,(string (aref shown 0)))
                (requests . ,(- (length drive--requests) requests))
                (shown . ,(drive--ghost)))
              steps)))
    (drive--set 'typed_along (nreverse steps))))

(defun drive--shown-after-key ()
  "The first ghost text noted since the last key was pressed, or nil."
  (cl-find-if (lambda (entry) (alist-get 'text entry))
              (nthcdr drive--shown-before-key (reverse drive--shown))))

(defun drive--step-wait-ghost (ms)
  "Wait MS for ghost text shown after the last key."
  (let ((entry (drive--wait ms #'drive--shown-after-key)))
    (unless entry
      (drive--fail "no ghost text within %d ms" ms))
    (drive--add 'ghosts `((text . ,(alist-get 'text entry))
                          (after_key_ms . ,(- (alist-get 't_ms entry)
                                              drive--last-key-ms))))))

(defun drive--step-wait-status (state ms)
  "Wait MS for a status of STATE for the current file."
  (let* ((since (drive--ms))
         (file (file-name-nondirectory buffer-file-name))
         (status (drive--wait
                  ms (lambda ()
                       (cl-find-if (lambda (status)
                                     (and (equal (alist-get 'state status) state)
                                          (equal (alist-get 'file status) file)
                                          (>= (alist-get 't_ms status) since)
                                          ;; Noted in the millisecond the step
                                          ;; began, it may be the last wait's.
                                          (not (memq status
                                                     (alist-get 'waited_statuses
                                                                drive--report)))))
                                   drive--statuses)))))
    (unless status
      (drive--fail "no %s status for %s within %d ms" state file ms))
    (drive--add 'waited_statuses status)))

(defun drive--step-wait-finished (ms)
  "Wait MS for a finished suggestion and the ghost text asked after it."
  (let ((entry (drive--wait
                ms (lambda ()
                     (let ((finished (car (last drive--finished))))
                       (and finished
                            (cl-some (lambda (request)
                                       (>= (alist-get 'sent_ms request)
                                           (alist-get 't_ms finished)))
                                     drive--requests)
                            (drive--shown-since (alist-get 't_ms finished))))))))
    (unless entry
      (drive--fail "no ghost text after flashls/suggestionFinished within %d ms" ms))
    (drive--pump 200)                   ; the asked-again answer settles
    (drive--set 'ghost_after_finished (drive--ghost))))

(defun drive--step-copy-lines (line count)
  "Copy COUNT lines from LINE with M-w, then go back."
  (let ((back (point)))
    (goto-char (point-min))
    (forward-line (1- line))
    (push-mark (line-beginning-position (1+ count)) t t)
    (drive--press (kbd "M-w"))
    (deactivate-mark)
    (goto-char back)))

(defun drive--step-snapshot ()
  "Note the line at point, the ghost text there and the last command."
  (drive--add 'snapshots
              `((line . ,(buffer-substring-no-properties
                          (line-beginning-position) (line-end-position)))
                (point . ,(vector (line-number-at-pos) (current-column)))
                (ghost . ,(drive--ghost))
                (command . ,(format "%s" last-command))
                (t_ms . ,(drive--ms)))))

(defun drive--run-step (step client)
  "Run STEP, a list (NAME ARGS...), with CLIENT."
  (drive--set 'stage (car step))
  (pcase step
    (`("open" ,path ,line ,col) (drive--step-open path line col client))
    (`("goto" ,line ,col) (setq drive--target (cons line col))
     (drive--press (kbd "<f12>")))
    (`("type" ,text ,interval) (drive--step-type text interval))
    (`("type_along" ,count ,interval) (drive--step-type-along count interval))
    (`("key" ,keys) (drive--press (kbd keys)))
    (`("wait_ghost" ,ms) (drive--step-wait-ghost ms))
    (`("wait_status" ,state ,ms) (drive--step-wait-status state ms))
    (`("wait_finished" ,ms) (drive--step-wait-finished ms))
    (`("copy_lines" ,line ,count) (drive--step-copy-lines line count))
    (`("split") (drive--press (kbd "C-x 2 C-x o")))
    (`("snapshot") (drive--step-snapshot))
    (`("rest" ,ms) (drive--pump ms))
    (`("save") (drive--press (kbd "C-x C-s")))
    (_ (drive--fail "unknown step %S" step))))

(defun drive--write-report (path)
  "Write the report to PATH as JSON."
  (drive--set 'requests (vconcat (reverse drive--requests)))
  (drive--set 'shown (vconcat (reverse drive--shown)))
  (drive--set 'statuses (vconcat (reverse drive--statuses)))
  (drive--set 'finished (vconcat (reverse drive--finished)))
  (drive--set 'sent (vconcat (reverse drive--sent)))
  (dolist (key '(opened typed_along ghosts waited_statuses snapshots))
    (drive--set key (vconcat (alist-get key drive--report))))
  (when buffer-file-name
    (drive--set 'buffer_lines (vconcat (drive--lines)))
    (drive--set 'point (list (line-number-at-pos) (current-column))))
  (with-temp-file path
    (insert (json-encode drive--report))))

(defun drive--shutdown ()
  "Stop the servers, so that none outlives Emacs."
  (when (fboundp 'eglot-shutdown-all)
    (ignore-errors (eglot-shutdown-all)))
  (when (fboundp 'lsp-workspace-shutdown)
    (dolist (workspace (ignore-errors (lsp--session-workspaces (lsp-session))))
      (ignore-errors (lsp-workspace-shutdown workspace)))))

(defun drive--main ()
  "Run the steps; exit 0 when all pass."
  (let ((client (drive--env "CLIENT" "eglot"))
        (steps (json-read-from-string (drive--env "STEPS" "[]")))
        (result (drive--env "RESULT"))
        (status 1))
    (unwind-protect
        (condition-case err
            (progn
              (drive--configure client (append (json-read-from-string
                                                (drive--env "CMD"))
                                               nil))
              (mapc (lambda (step) (drive--run-step (append step nil) client))
                    steps)
              (drive--set 'stage "done")
              (setq status 0))
          (error (drive--set 'error (error-message-string err))))
      (drive--write-report result)
      (drive--shutdown)
      (kill-emacs status))))

(defun drive--interactive ()
  "Open the file of FLASHLS_EMACS_FILE for typing; write the report when ready."
  (let ((client (drive--env "CLIENT" "eglot"))
        (path (drive--env "FILE")))
    (drive--configure client (append (json-read-from-string (drive--env "CMD")) nil))
    (find-file path)
    (when (equal client "lsp-mode")
      (lsp-workspace-folders-add (file-name-directory path)))
    (setq drive--target (cons (string-to-number (drive--env "LINE"))
                              (string-to-number (drive--env "COL"))))
    (drive--goto-target)
    (call-interactively (if (equal client "eglot") #'eglot #'lsp))
    (let ((buffer (current-buffer)))
      (run-with-timer 0.1 0.1
                      (lambda ()
                        (with-current-buffer buffer
                          (when (and (flashls--backend)
                                     (not (file-exists-p (drive--env "RESULT"))))
                            (drive--write-report (drive--env "RESULT")))))))))

(if (drive--env "INTERACTIVE")
    (add-hook 'emacs-startup-hook #'drive--interactive)
  (drive--main))

;;; drive.el ends here
